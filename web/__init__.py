"""``leash.web``: the dashboard and the HTTP admin API (``leash web``).

A separate process that speaks to the broker over its admin socket (see
serve.py for why). Its libraries (Starlette, uvicorn, Jinja2,
python-multipart) are the ``web`` extra: ``pip install 'leash-broker[web]'``.
Modules: serve (command line, protected mode, uvicorn), app (the ASGI app),
guard (headers, sessions, sign-in, CSRF), credentials (password hash, keys),
sessions, gateway (admin requests in threads), api (JSON), pages (HTML),
forms (checked input), actions (changes), charts (SVG), filters (templates).
"""
