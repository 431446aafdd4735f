"""A skill whose Arguments have two required fields: a command's text must be a JSON object of them."""

from pydantic import BaseModel

from assistantctl.engine.skills import BaseSkill, SkillContext


class Pair(BaseSkill):
    class Arguments(BaseModel):
        left: str
        right: int

    async def execute(self, context: SkillContext) -> str:
        return f"{context.arguments.left}={context.arguments.right}"
