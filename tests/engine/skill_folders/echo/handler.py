"""A skill with the default Arguments (`text`) and no Config; same internal names as weather's."""

from assistantctl.engine.skills import BaseSkill, SkillContext

PREFIX = "echo"


class Handler(BaseSkill):
    async def execute(self, context: SkillContext) -> str:
        return f"{PREFIX}: {context.arguments.text}"
