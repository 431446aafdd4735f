"""A tool-only skill (no command) that sees the conversation and the request id."""

from assistantctl.engine.skills import BaseSkill, SkillContext


class Quiet(BaseSkill):
    async def execute(self, context: SkillContext) -> str:
        users = [m for m in context.conversation if m["role"] == "user"]
        return f"quiet saw {len(users)} user message(s), request {bool(context.request_id)}, {context.arguments.text}"
