"""Run with the OpenStack venv's python: evaluate capacityd's policy overrides with the REAL Nova 34 and
Placement policy engines (oslo.policy + each service's registered default rules). Prints one JSON object."""

from __future__ import annotations

import json
import sys

from oslo_config import cfg
from oslo_policy import policy


def enforcer(service: str, policy_file: str | None):
    module = __import__(f"{service}.policies", fromlist=["list_rules"])
    conf = cfg.ConfigOpts()
    conf([], project=service)
    kwargs = {"policy_file": policy_file} if policy_file else {}
    result = policy.Enforcer(conf, use_conf=False, **kwargs)
    result.register_defaults(module.list_rules())
    result.load_rules(force_reload=True)
    return result, {r.name: r.check_str for r in module.list_rules()}


def main(service: str, policy_file: str, rules: list[str]) -> dict:
    out = {}
    reader = {
        "roles": ["capacityd_reader"],
        "project_id": "capacityd-project",
        "user_id": "capacityd",
        "system_scope": None,
    }
    plain_reader = {**reader, "roles": ["reader", "member"]}
    target = {"project_id": "someone-else", "user_id": "someone", "project": "someone-else"}
    with_override, defaults = enforcer(service, policy_file)
    without, _ = enforcer(service, None)
    out["defaults"] = {name: defaults.get(name) for name in rules}
    out["with_role"] = {name: bool(with_override.enforce(name, target, reader)) for name in rules}
    out["reader_without_override"] = {name: bool(without.enforce(name, target, plain_reader)) for name in rules}
    out["overrides"] = {name: str(rule) for name, rule in with_override.file_rules.items()}
    writes = [
        name
        for name in defaults
        if any(w in name for w in (":create", ":delete", ":update", ":add", ":remove", ":set", "migrate", ":reboot"))
    ]
    out["writes_allowed"] = sorted(name for name in writes if with_override.enforce(name, target, reader))
    out["writes_checked"] = len(writes)
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], sys.argv[3].split(","))))
