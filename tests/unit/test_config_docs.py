"""The one configuration object: every setting read by Config.from_env, documented in the README
from it, and no other code reading a setting from the environment."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.config import Config, settings, settings_table
from app.domain.errors import InvalidConfiguration

ROOT = Path(__file__).resolve().parents[2]
START = "<!-- settings table: generated from app.config.settings_table() -->\n"
END = "\n<!-- end of settings table -->"

# A value for each kind of setting, different from every default.
SAMPLES = {str: "given-value", Path: "/tmp/given", int: "7", float: "0.25", bool: "1", tuple: "1,2,3"}
SAMPLE_FOR = {"PAYROUTER_RULES_MERCHANT_SETS": "300"}  # at least PAYROUTER_RULES_PAIRED_SETS (8)

# Where the code may still touch os.environ, and why (docs/design.md "Configuration").
ENV_ALLOWED = {
    "app/config.py": "Config.from_env: the one reader of settings",
    "channels/config.py": "environment(): the channels file's ${VAR} and secret_env names, from the mapping "
                          "the router passes (Config.channel_env) or, on its own, this process's",
    "app/entrypoints/demo.py": "writes its children's environment before they start",
    "app/entrypoints/cli.py": "`secrets rotate --old-key-env NAME` reads the variable the operator names",
    "app/adapters/metrics_dir.py": "PROMETHEUS_MULTIPROC_DIR is prometheus-client's own variable, exported for it",
}


def test_the_readme_table_is_the_generated_one():
    readme = (ROOT / "README.md").read_text()
    assert START in readme and END in readme
    documented = readme[readme.index(START) + len(START):readme.index(END)]
    assert documented == settings_table(), (
        "README.md's configuration table differs from app.config: regenerate it with "
        "python -c 'from app.config import settings_table; print(settings_table())'")


def test_every_setting_is_a_row_with_its_default():
    rows = {}
    for line in settings_table().splitlines()[2:]:
        env, default, doc = (cell.strip() for cell in line.strip("|").split(" | "))
        rows[env.strip("`")] = (default.strip("`"), doc)
    assert list(rows) == [item.env for item in settings()]
    assert rows["PAYROUTER_RATE_LIMIT"][0] == str(Config.from_env({}).rate_limit)
    assert rows["PAYROUTER_WEBHOOK_RETRY_SCHEDULE"][0] == ",".join(map(str, Config.from_env({}).webhook_retry_schedule))
    assert rows["PAYROUTER_WEBHOOK_SWEEP_GRACE"][0] == str(Config.from_env({}).webhook_sweep_grace)
    assert all(doc for _, doc in rows.values())


@pytest.mark.parametrize("item", settings(), ids=lambda item: item.env)
def test_from_env_reads_each_setting(item):
    default = getattr(Config.from_env({}), item.name)
    kind = next((k for k in (bool, Path, int, float, tuple) if isinstance(item.default, k)), str)
    given = getattr(Config.from_env({item.env: SAMPLE_FOR.get(item.env, SAMPLES[kind])}), item.name)
    assert given != default, f"{item.env} does not change Config.{item.name}"
    assert getattr(Config.from_env({item.env: ""}), item.name) == default or item.blank_is_value


def test_defaults_and_parsing_as_documented():
    config = Config.from_env({})
    assert (config.webhook_timeout, config.webhook_secret_overlap, config.webhook_sweep_grace,
            config.webhook_lease_margin) == (10.0, 86400, 60, 30)
    assert config.log_json is True and Config.from_env({"PAYROUTER_LOG_FORMAT": "text"}).log_json is False
    assert Config.from_env({"PAYROUTER_RULES_APPROVAL": "yes"}).rules_approval is False  # only "1" turns it on
    assert Config.from_env({"DATABASE_URL": "postgresql://u@h/db"}).database_url == "postgresql+psycopg://u@h/db"
    assert config.database_url == f"sqlite:///{config.var_dir / 'payrouter.db'}"
    env = {"SOME_CHANNEL_SECRET": "x"}
    assert Config.from_env(env).channel_env is env  # what the router hands channels
    assert "channel_env" not in repr(config)  # the environment, secrets included, is never printed
    keyed = Config.from_env({"PAYROUTER_SECRET_KEY": "k" * 32, "PAYROUTER_PREVIOUS_SECRET_KEY": "p" * 32,
                             "PAYROUTER_OPS_TOKEN": "ops-token-1", "PAYROUTER_METRICS_TOKEN": "scrape-token-1"})
    assert not any(value in repr(keyed) for value in ("k" * 32, "p" * 32, "ops-token-1", "scrape-token-1"))


def test_rule_set_caches_pairing_off_and_fewer_merchant_sets_than_pairs_refused():
    assert Config.from_env({"PAYROUTER_RULES_PAIRED_SETS": "0"}).rules_paired_sets == 0  # always two matches
    with pytest.raises(InvalidConfiguration, match="PAYROUTER_RULES_PAIRED_SETS='-1' cannot be used"):
        Config.from_env({"PAYROUTER_RULES_PAIRED_SETS": "-1"})
    with pytest.raises(InvalidConfiguration, match="PAYROUTER_RULES_MERCHANT_SETS=4 cannot be used: it must be at "
                                                   "least PAYROUTER_RULES_PAIRED_SETS=8"):
        Config.from_env({"PAYROUTER_RULES_MERCHANT_SETS": "4"})
    assert Config.from_env({"PAYROUTER_RULES_MERCHANT_SETS": "32", "PAYROUTER_RULES_PAIRED_SETS": "32"})
    with pytest.raises(InvalidConfiguration, match="must be at least PAYROUTER_RULES_PAIRED_SETS=9"):
        Config.from_env({}).with_(rules_merchant_sets=8, rules_paired_sets=9)


def test_nothing_else_reads_settings_from_the_environment():
    reads = re.compile(r"os\.environ|getenv\(")
    found = set()
    for folder in ("app", "rules", "channels", "admin"):
        for path in (ROOT / folder).rglob("*.py"):
            if reads.search(path.read_text()):
                found.add(path.relative_to(ROOT).as_posix())
    if reads.search((ROOT / "worker.py").read_text()):
        found.add("worker.py")
    assert found <= set(ENV_ALLOWED), sorted(found - set(ENV_ALLOWED))
