"""Spec versions: the steps that carry a file written for an older version to the current one.

A step is a small function that edits the parsed data of version N, in place, into version N+1,
and returns the moves it made: (where a value is now, where the file has it), so an error found
after migrating still points at the file as written. The same steps serve two readers:

- the loader runs them on plain data before validation, so an older file still loads;
- `assistantctl migrate` runs them on ruamel.yaml's round-trip mappings and writes the result,
  which keeps the file's comments and key order. So a step only uses mapping operations, and adds
  keys through `_insert`, which keeps a round-trip mapping's order.

A file without `version:` is version 1, the default version 1 documented.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field

Location = tuple[str | int, ...]
Moves = list[tuple[Location, Location]]  # (where the value is now, where the file has it)

FIRST_VERSION = 1


@dataclass(frozen=True)
class Migration:
    to: int  # the version this step produces, from the one before it
    change: str  # one line for notes and `assistantctl migrate`
    apply: Callable[[MutableMapping], Moves]


class UnknownVersion(ValueError):
    """`version:` holds no version this assistantctl reads."""

    def __init__(self, message: str, hint: str):
        super().__init__(message)
        self.hint = hint


@dataclass
class Upgrade:
    """What `upgrade` did to one file's data."""

    written: int  # the version the file was written for
    steps: list[Migration] = field(default_factory=list)
    moves: Moves = field(default_factory=list)  # every step's, in the order they were made

    def file_location(self, loc: Location) -> Location:
        """Where a location of the migrated data is in the file as written."""
        for now, was in reversed(self.moves):
            if loc[: len(now)] == now:
                loc = was + loc[len(now) :]
        return loc


def nest(data: MutableMapping, key: str, under: str) -> Moves:
    """Move `data[key]` to `data[under][key]`; the new `under` takes `key`'s place in the file, and
    the comments on `key`'s line go with it. Nothing moves when `key` is absent or `under` exists
    (a hand-written `under` is the validation's to report)."""
    if key not in data or under in data:
        return []
    position = list(data).index(key)
    section = type(data)()
    section[key] = data[key]
    comments = getattr(data, "ca", None)  # ruamel keeps a key's end-of-line comments beside the map
    if comments is not None and key in comments.items:
        section.ca.items[key] = comments.items.pop(key)
    del data[key]
    _insert(data, position, under, section)
    return [((under, key), (key,))]


def v1_to_v2(data: MutableMapping) -> Moves:
    """Version 2 gathers what the model can use under `tools:`; the skills are its first part."""
    return nest(data, "skills", under="tools")


MIGRATIONS = [Migration(2, "skills: moved to tools.skills", v1_to_v2)]
CURRENT_VERSION = MIGRATIONS[-1].to


def version_of(data: MutableMapping) -> int:
    """The version a file's data is written for; raises `UnknownVersion` for one this code cannot read."""
    version = data.get("version", FIRST_VERSION)
    known = f"{FIRST_VERSION} to {CURRENT_VERSION}"
    if not isinstance(version, int) or isinstance(version, bool) or version < FIRST_VERSION:
        raise UnknownVersion(f"unknown spec version {version!r}", f"this assistantctl reads versions {known}")
    if version > CURRENT_VERSION:
        raise UnknownVersion(
            f"spec version {version} is newer than this assistantctl, which reads versions {known}",
            "upgrade assistantctl to one that knows this version",
        )
    return version


def upgrade(data: MutableMapping) -> Upgrade:
    """Migrate `data` in place to `CURRENT_VERSION`; raises `UnknownVersion`."""
    done = Upgrade(written=version_of(data))
    for step in MIGRATIONS:
        if step.to <= done.written:
            continue
        done.moves += step.apply(data)
        done.steps.append(step)
        if "version" in data:
            data["version"] = step.to
        else:
            _insert(data, 0, "version", step.to)
    return done


def moved_since(loc: Location) -> str | None:
    """For a key the current version does not know: where a later version moved it, if one did."""
    keys = [part for part in loc if isinstance(part, str)]
    if len(keys) != len(loc) or not keys:
        return None
    for step in MIGRATIONS:
        probe: dict = {}
        inner = probe
        for key in keys[:-1]:
            inner = inner.setdefault(key, {})
        inner[keys[-1]] = None
        for now, was in step.apply(probe):
            if was == loc:
                return f"version {step.to} moved it to {'.'.join(map(str, now))}"
    return None


def _insert(data: MutableMapping, position: int, key: str, value: object) -> None:
    # A round-trip mapping places the key where the file should have it; a plain dict's order does
    # not matter to validation.
    if hasattr(data, "insert"):
        data.insert(position, key, value)
    else:
        data[key] = value
