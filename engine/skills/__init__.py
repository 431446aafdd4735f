"""Skills: plugins around every model call (plugins.py), the ones shipped with the engine
(builtin.py), and skill folders (folders.py). Skill authors import their base class from here:
`from assistantctl.engine.skills import BaseSkill, SkillContext`."""

from .folders import BaseSkill, SkillContext

__all__ = ["BaseSkill", "SkillContext"]
