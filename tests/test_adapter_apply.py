"""A custom adapter next to the spec, from `apply` to answer: the example FAQ adapter is shipped with
the release (nothing installs it on the host), the engine imports it from there and answers with
it; a changed module shows in `plan` as a changed file and goes live with the next apply (the
workers roll onto the new code)."""

from __future__ import annotations

import copy
import shutil

import pytest
import yaml

from cli_helpers import REPO, Deployment, applied

pytestmark = pytest.mark.slow

EXAMPLE = REPO / "examples" / "adapters"


def test_an_adapter_next_to_the_spec_is_shipped_loaded_and_rolled_onto_new_code(tmp_path):
    deployment = Deployment(tmp_path)
    module = tmp_path / "faq_adapter.py"
    shutil.copy(EXAMPLE / "faq_adapter.py", module)
    data = copy.deepcopy(deployment.data)
    data["models"] = yaml.safe_load((EXAMPLE / "assistant.yaml").read_text())["models"]
    deployment.rewrite(data)

    with applied(deployment):
        assert (deployment.root / "current" / "adapters" / "faq_adapter.py").read_text() == module.read_text()
        known = deployment.chat("What are your opening hours?")
        assert (known["reply"], known["model"]) == ("We are open 9:00 to 17:00, Monday to Friday.", "faq")
        assert deployment.chat("tell me a joke")["model"] == "local"  # the adapter hands it on

        module.write_text(module.read_text().replace("Reply(text=answer,", "Reply(text=answer.upper(),"))
        plan = deployment.run("plan")
        assert plan.returncode == 0, plan.stdout + plan.stderr
        assert "adapters/faq_adapter.py" in plan.stdout, plan.stdout
        again = deployment.run("apply", "--auto-approve")
        assert again.returncode == 0, again.stdout + again.stderr
        hours = deployment.chat("What are your opening hours?")["reply"]
        assert hours == "WE ARE OPEN 9:00 TO 17:00, MONDAY TO FRIDAY."
