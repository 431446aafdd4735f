"""notes_save, notes_list, notes_delete: short notes a user keeps across conversations.

One SQLite database under <data_dir>/tools/notes.sqlite; every statement is scoped by the calling
user taken from the context, never from the model's arguments, so one user cannot read, list or
delete another's notes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
from pydantic import Field

from ..base import Arguments, Tool, ToolContext, ToolError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS notes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL,
    text TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS notes_user ON notes (user, id);
"""


@contextlib.asynccontextmanager
async def _open(context: ToolContext) -> AsyncIterator[aiosqlite.Connection]:
    folder = Path(context.data_dir) / "tools"
    folder.mkdir(parents=True, exist_ok=True)
    async with aiosqlite.connect(folder / "notes.sqlite", timeout=5) as db:
        await db.execute("PRAGMA journal_mode=WAL")  # several workers share the file
        await db.executescript(_SCHEMA)
        yield db


class SaveArgs(Arguments):
    text: str = Field(min_length=1, max_length=20_000, description="The note to keep.")


async def notes_save(args: SaveArgs, context: ToolContext) -> str:
    limits = context.settings.notes
    if len(args.text) > limits.max_note_chars:
        raise ToolError(f"a note may have at most {limits.max_note_chars} characters")
    async with _open(context) as db:
        (count,) = await (await db.execute("SELECT COUNT(*) FROM notes WHERE user = ?", (context.user,))).fetchone()
        if count >= limits.max_notes_per_user:
            raise ToolError(f"you already keep {count} notes, the most allowed; delete some first")
        cursor = await db.execute(
            "INSERT INTO notes (user, text, created) VALUES (?, ?, ?)", (context.user, args.text, time.time())
        )
        await db.commit()
        return f"saved as note {cursor.lastrowid}"


class ListArgs(Arguments):
    contains: str | None = Field(None, max_length=200, description="Only notes containing this text.")
    limit: int = Field(20, ge=1, le=100, description="At most this many notes, newest first.")


async def notes_list(args: ListArgs, context: ToolContext) -> str:
    query, params = "SELECT id, text, created FROM notes WHERE user = ?", [context.user]
    if args.contains:
        query += " AND instr(lower(text), lower(?)) > 0"
        params.append(args.contains)
    async with _open(context) as db:
        rows = await (await db.execute(query + " ORDER BY id DESC LIMIT ?", (*params, args.limit))).fetchall()
    if not rows:
        return "no notes"
    return "\n".join(
        f"[{id_}] {time.strftime('%Y-%m-%d', time.gmtime(created))}: {text}" for id_, text, created in rows
    )


class DeleteArgs(Arguments):
    id: int = Field(ge=1, description="The note's number, as notes_list shows it.")


async def notes_delete(args: DeleteArgs, context: ToolContext) -> str:
    async with _open(context) as db:
        cursor = await db.execute("DELETE FROM notes WHERE id = ? AND user = ?", (args.id, context.user))
        await db.commit()
    if cursor.rowcount == 0:
        raise ToolError(f"you have no note {args.id}")
    return f"deleted note {args.id}"


TOOLS = (
    Tool("notes_save", "Keep a note for this user, to find again in later conversations.", SaveArgs, notes_save),
    Tool(
        "notes_list", "This user's notes, newest first, optionally only those containing a text.", ListArgs, notes_list
    ),
    Tool("notes_delete", "Delete one of this user's notes by its number.", DeleteArgs, notes_delete),
)
