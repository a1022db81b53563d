"""Queue and type names by number, for the packed jobs of the jobs table (jobs.py).

A packed job names its queue and its type by a small number instead of the
string. Each packed job counts one use of each of its two names; a name no
packed job uses is dropped and its number reused, so the numbers stay small
(one byte each below 128 names). Not lazy: a name goes with its last use,
and the table holds at most as many numbers as names were in use at once (a
freed number is taken again before a new one). A state image writes the
numbering, and ``load`` takes it back before the jobs count their uses.
"""


class Names:
    """Queue and type names by number, each kept while a job uses it."""

    __slots__ = ("free", "names", "numbers", "uses")

    def __init__(self) -> None:
        self.names: list[str] = []  # by number; "" (no queue or type is named so): free
        self.numbers: dict[str, int] = {}
        self.uses: list[int] = []
        self.free: list[int] = []

    def take(self, name: str) -> int:
        """The name's number, counting one more use."""
        number = self.numbers.get(name)
        if number is not None:
            self.uses[number] += 1
            return number
        if self.free:
            number = self.free.pop()
            self.names[number], self.uses[number] = name, 1
        else:
            number = len(self.names)
            self.names.append(name)
            self.uses.append(1)
        self.numbers[name] = number
        return number

    def drop_name(self, name: str) -> None:
        """One use fewer of a name (by the string)."""
        self.drop(self.numbers[name])

    def drop(self, number: int) -> None:
        """One use fewer; the name goes with its last."""
        self.uses[number] -= 1
        if not self.uses[number]:
            del self.numbers[self.names[number]]
            self.names[number] = ""
            self.free.append(number)

    def name(self, number: int) -> str:
        name = self.names[number] if 0 <= number < len(self.names) else ""
        if not name:
            raise ValueError(f"no name has number {number}")
        return name

    def load(self, names: list[str]) -> None:
        """The numbering of a state image, with no uses yet (the jobs count them)."""
        if self.names or len(set(filter(None, names))) != len(names) - names.count(""):
            raise ValueError("names are loaded once, each name once")
        self.names = list(names)
        self.numbers = {name: n for n, name in enumerate(names) if name}
        self.uses = [0] * len(names)
        self.free = [n for n, name in enumerate(names) if not name]

    def prune(self) -> None:
        """Drop the names no job uses (after loading an image)."""
        for number, name in enumerate(self.names):
            if name and not self.uses[number]:
                self.uses[number] = 1
                self.drop(number)
