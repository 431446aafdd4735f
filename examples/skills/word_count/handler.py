"""A skill folder's handler: one BaseSkill class (see assistantctl.engine.skills.folders).

Declared in assistant.yaml under tools.skill_folders; `/words some text` runs it without the model,
and the model may call it as the tool `skill_word_count`.
"""

from pydantic import BaseModel

from assistantctl.engine.skills import BaseSkill, SkillContext


class WordCount(BaseSkill):
    """Counts the words of a text."""

    class Config(BaseModel):
        min_length: int = 1  # shorter words are not counted
        label: str = "words"

    async def execute(self, context: SkillContext) -> str:
        words = [word for word in context.arguments.text.split() if len(word) >= self.config.min_length]
        return f"{len(words)} {self.config.label}"
