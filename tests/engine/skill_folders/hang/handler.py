"""A skill that never answers."""

import asyncio

from assistantctl.engine.skills import BaseSkill, SkillContext


class Hang(BaseSkill):
    async def execute(self, context: SkillContext) -> str:
        await asyncio.sleep(3600)
        return "never"
