"""A skill that always raises."""

from assistantctl.engine.skills import BaseSkill, SkillContext


class Boom(BaseSkill):
    async def execute(self, context: SkillContext) -> str:
        raise RuntimeError("the secret internals of boom")
