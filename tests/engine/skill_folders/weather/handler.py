"""A skill with its own Config and Arguments (one required string: a command's text fills it)."""

from pydantic import BaseModel

from assistantctl.engine.skills import BaseSkill, SkillContext

PREFIX = "weather"  # echo/handler.py has a PREFIX too: the two modules must not share it


class Handler(BaseSkill):
    """The weather for a city."""

    class Config(BaseModel):
        units: str = "metric"

    class Arguments(BaseModel):
        city: str

    async def execute(self, context: SkillContext) -> str:
        where = f"for {context.user} on {context.channel}"
        return f"{PREFIX}: {context.arguments.city}: sunny ({self.config.units}) {where}"
