import sys

if sys.argv[1:2] == ["password"]:
    from leash.web.serve import password_main

    sys.exit(password_main(sys.argv[2:]))

try:
    from leash.web.serve import main
except ModuleNotFoundError as missing:  # the web extra is not installed
    print(
        f"leash web: error: {missing.name} is missing: pip install 'leash-broker[web]'",
        file=sys.stderr,
    )
    sys.exit(78)
sys.exit(main())
