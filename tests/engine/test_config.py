"""Reading the engine's config.yaml (spec/engine.md 1.1): text in, values or a ConfigError out.

No sockets and no event loop: the dev engine's use of the result is in test_dev_engine_config.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from iii_trio.testing._config import (
    ConfigError,
    EngineConfig,
    Listener,
    WorkerEntry,
    parse_config,
    read_config,
    resolve_listeners,
)
from iii_trio.testing._engine._cron import CronSettings
from iii_trio.testing._engine._http_functions import HttpSecurity
from iii_trio.testing._engine._observability import ObservabilitySettings

VERSION = "0.23.0-rc.4+test"


def parse(text: str, environ: Mapping[str, str] | None = None) -> EngineConfig:
    return parse_config(text, source="config.yaml", environ=environ or {}, engine_version=VERSION)


def problem(text: str, environ: Mapping[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as raised:
        parse(text, environ)
    error = raised.value
    assert error.source == "config.yaml"
    assert str(error) == f"config.yaml: {error.problem}"
    assert "\n" not in str(error)
    return error.problem


def names(config: EngineConfig) -> list[str]:
    return [entry.name for entry in config.workers]


# --- substitution -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("placeholder", "environ", "expected"),
    [
        ("${NAME}", {"NAME": "from-env"}, "from-env"),
        ("${NAME:fallback}", {"NAME": "from-env"}, "from-env"),
        ("${NAME:fallback}", {}, "fallback"),
        ("x-${NAME:}-y", {}, "x--y"),
        ("[${NAME:unused}]", {"NAME": ""}, "[]"),  # set but empty is still set
        ("${NAME:a:b}", {}, "a:b"),  # the default runs to the brace
        ("${NAME:__III_ENGINE_VERSION__}", {}, VERSION),
        ("${NAME:__III_ENGINE_VERSION__}", {"NAME": "1.0"}, "1.0"),
        ("v${NAME:__III_ENGINE_VERSION__x}", {}, "v__III_ENGINE_VERSION__x"),
        ("$NAME {NAME}", {"NAME": "unused"}, "$NAME {NAME}"),
    ],
)
def test_placeholders_are_substituted_before_parsing(
    placeholder: str, environ: Mapping[str, str], expected: str
) -> None:
    config = parse(f"workers:\n  - name: '{placeholder}'\n", environ)
    assert names(config) == [expected]


def test_substitution_can_write_yaml_structure() -> None:
    # The text is substituted, not the values: a variable may hold YAML.
    assert names(parse("workers: ${LIST:[]}\n")) == []
    assert names(parse("workers: ${LIST:[]}\n", {"LIST": "[{name: a}, {name: b}]"})) == ["a", "b"]


def test_an_unset_variable_without_a_default_is_named() -> None:
    text = "workers:\n  - name: ${FIRST}\n  - name: ${SECOND}\n  - name: ${FIRST}\n"
    assert problem(text) == (
        "environment variables 'FIRST', 'SECOND' not set and no default provided "
        "(write ${FIRST:default} to give one)"
    )
    assert "'PORT' not set" in problem("# port: ${PORT}\nworkers: []\n")  # comments too


# --- the top level ------------------------------------------------------------------------------


def test_modules_is_appended_after_workers() -> None:
    config = parse("modules:\n  - name: m\nworkers:\n  - name: w1\n  - name: w2\n")
    assert names(config) == ["w1", "w2", "m"]
    assert [entry.key for entry in config.workers] == ["workers[0]", "workers[1]", "modules[0]"]


@pytest.mark.parametrize("text", ["", "# nothing\n", "workers: []\n", "{}\n"])
def test_a_file_without_workers_leaves_the_defaults(text: str) -> None:
    assert parse(text) == EngineConfig(source="config.yaml")


def test_an_unknown_top_level_key_is_refused() -> None:
    assert problem("workers: []\nworker: []\n") == (
        "unknown top-level key 'worker' (expected workers, modules or "
        "registration_namespace_grace_ms)"
    )


@pytest.mark.parametrize("key", ["workers", "modules"])
def test_a_null_worker_list_is_refused(key: str) -> None:
    assert (
        problem(f"{key}:\n") == f"{key}: null is not a list of workers (write `{key}: []` for none)"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- name: a\n", "expected a mapping at the top level (with `workers:`), got a list"),
        ("workers: {name: a}\n", "workers: expected a list of workers, got a mapping"),
        ("workers: [a]\n", "workers[0]: expected a mapping with a `name`, got a string ('a')"),
        ("workers: [{config: {}}]\n", "workers[0].name: missing: every worker needs a name"),
        ("workers: [{name: 7}]\n", "workers[0].name: expected a string, got an integer (7)"),
        ("workers: [{name: ' '}]\n", "workers[0].name: must not be blank"),
        ("workers: [{name: a, image: [1]}]\n", "workers[0].image: expected a string, got a list"),
    ],
)
def test_malformed_entries_are_refused_with_their_key(text: str, expected: str) -> None:
    assert problem(text) == expected


def test_registration_namespace_grace_ms_is_read() -> None:
    assert parse("registration_namespace_grace_ms: 250\n").namespace_grace_ms == 250
    assert parse("workers: []\n").namespace_grace_ms is None
    assert problem("registration_namespace_grace_ms: -1\n") == (
        "registration_namespace_grace_ms: expected a non-negative integer, got an integer (-1)"
    )
    assert problem("registration_namespace_grace_ms: '100'\n").endswith("got a string ('100')")


def test_yaml_syntax_errors_name_the_file_and_the_place(tmp_path: Path) -> None:
    path = tmp_path / "engine.yaml"
    path.write_text("workers:\n  - name: a\n   config: {}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        read_config(path, environ={}, engine_version=VERSION)
    message = str(raised.value)
    assert message.startswith(f"{path}: invalid YAML at line 3, column 4: ")
    assert "\n" not in message


def test_reading_a_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("workers:\n  - name: ${WHO:nobody}\n", encoding="utf-8")
    config = read_config(str(path), environ={"WHO": "me"}, engine_version=VERSION)
    assert (config.source, names(config)) == (str(path), ["me"])
    path.write_bytes(b"workers: [{name: \xff}]\n")
    with pytest.raises(ConfigError, match=r"config\.yaml: not UTF-8 text \(byte 17\)"):
        read_config(path, environ={}, engine_version=VERSION)
    with pytest.raises(FileNotFoundError):
        read_config(tmp_path / "missing.yaml", environ={}, engine_version=VERSION)


# --- workers ------------------------------------------------------------------------------------


def test_repeated_names_become_numbered_instances() -> None:
    config = parse(
        "workers:\n"
        "  - name: iii-worker-manager\n"
        "  - name: iii-http\n"
        "    config: {port: 3111}\n"
        "  - name: iii-worker-manager\n"
        "    config: {port: 49135}\n"
        "  - name: iii-worker-manager\n"
    )
    assert [entry.instance for entry in config.workers] == [
        "iii-worker-manager",
        "iii-http",
        "iii-worker-manager#1",
        "iii-worker-manager#2",
    ]
    assert config.entries("iii-http") == (
        WorkerEntry(name="iii-http", instance="iii-http", config={"port": 3111}, key="workers[1]"),
    )
    assert [entry.instance for entry in config.entries("iii-worker-manager")][1:] == [
        "iii-worker-manager#1",
        "iii-worker-manager#2",
    ]


@pytest.mark.parametrize(("old", "new"), [("iii-http", "http"), ("iii-pubsub", "pubsub")])
def test_both_names_of_a_renamed_worker_are_refused(old: str, new: str) -> None:
    assert problem(f"workers: [{{name: {new}}}]\nmodules: [{{name: {old}}}]\n") == (
        f"duplicate worker configurations: '{old}' is the deprecated name for '{new}' "
        "(keep one of each)"
    )


def test_one_name_of_each_pair_is_fine() -> None:
    assert names(parse("workers: [{name: iii-http}, {name: cron}]\n")) == ["iii-http", "cron"]


@pytest.mark.parametrize("name", ["iii-http", "iii-worker-manager", "configuration"])
def test_an_image_on_a_builtin_worker_is_refused(name: str) -> None:
    assert problem(f"workers:\n  - name: w\n  - name: {name}\n    image: x:1\n") == (
        f"workers[1].image: '{name}' is a built-in worker and cannot have an 'image' field"
    )


def test_an_image_on_another_worker_is_kept() -> None:
    (entry,) = parse("workers: [{name: my-worker, image: 'ghcr.io/me/w:1', foo: 1}]\n").workers
    assert (entry.image, entry.config) == ("ghcr.io/me/w:1", None)


def test_what_the_dev_engine_ignores_is_noted_once_each() -> None:
    config = parse(
        "workers:\n"
        "  - name: iii-exec\n"
        "  - name: my-worker\n"
        "  - name: iii-exec\n"
        "  - name: iii-engine-functions\n"  # provided: nothing to say without a block
        "  - name: iii-worker-manager\n"
        "    config: {rbac: {auth_function_id: a::b}}\n"
        "  - name: iii-worker-manager\n"
        "    config: {port: 1, rbac: {}, middleware_function_id: m::w}\n"
    )
    ignored = "config: iii-worker-manager key '{}' is not applied by the dev engine; ignored"
    assert config.notes == (
        "config: worker 'iii-exec' is not emulated by the dev engine; ignored",
        "config: worker 'my-worker' is not emulated by the dev engine; ignored",
        ignored.format("rbac"),
        ignored.format("middleware_function_id"),
    )


# --- iii-worker-manager: the listeners ----------------------------------------------------------


def test_listeners_in_file_order_with_the_defaults() -> None:
    config = parse(
        "workers:\n"
        "  - name: iii-worker-manager\n"
        "    config:\n"
        "      port: ${MAIN_PORT:0}\n"
        "      handshake_timeout_ms: 2500\n"
        "  - name: iii-state\n"
        "  - name: iii-worker-manager\n"
        "    config: {host: '::1', port: 49135}\n"
        "  - name: iii-worker-manager\n"
        "    config: null\n"
    )
    assert config.listeners == (
        Listener(host="127.0.0.1", port=0, handshake_timeout=2.5),
        Listener(host="::1", port=49135, handshake_timeout=10.0),
        Listener(host="127.0.0.1", port=49134, handshake_timeout=10.0),
    )


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (
            "{port: abc}",
            "workers[2].config.port: expected an integer from 0 to 65535, got a string ('abc')",
        ),
        (
            "{port: '49134'}",
            "workers[2].config.port: expected an integer from 0 to 65535, got a string ('49134')",
        ),
        (
            "{port: 65536}",
            "workers[2].config.port: expected an integer from 0 to 65535, got an integer (65536)",
        ),
        (
            "{port: -1}",
            "workers[2].config.port: expected an integer from 0 to 65535, got an integer (-1)",
        ),
        (
            "{port: true}",
            "workers[2].config.port: expected an integer from 0 to 65535, got a boolean (True)",
        ),
        (
            "{port: 1.5}",
            "workers[2].config.port: expected an integer from 0 to 65535, got a number (1.5)",
        ),
        ("{host: 1}", "workers[2].config.host: expected a string, got an integer (1)"),
        ("{host: ''}", "workers[2].config.host: must not be blank"),
        (
            "{handshake_timeout_ms: soon}",
            "workers[2].config.handshake_timeout_ms: expected a non-negative integer, "
            "got a string ('soon')",
        ),
        (
            "{middleware_function_id: [a]}",
            "workers[2].config.middleware_function_id: expected a string, got a list",
        ),
        ("{rbac: yes}", "workers[2].config.rbac: expected a mapping, got a boolean (True)"),
        ("[49134]", "workers[2].config: expected a mapping, got a list"),
        (
            "{prot: 1}",
            "workers[2].config.prot: unknown key (an iii-worker-manager block takes host, port, "
            "handshake_timeout_ms, middleware_function_id, rbac)",
        ),
    ],
)
def test_a_bad_listener_block_is_refused_with_its_key_path(block: str, expected: str) -> None:
    text = (
        f"workers:\n  - name: a\n  - name: b\n  - name: iii-worker-manager\n    config: {block}\n"
    )
    assert problem(text) == expected


def test_explicit_host_and_port_replace_the_main_listener_only() -> None:
    config = parse(
        "workers:\n"
        "  - name: iii-worker-manager\n"
        "    config: {host: localhost, port: 5000, handshake_timeout_ms: 100}\n"
        "  - name: iii-worker-manager\n"
        "    config: {port: 5001}\n"
    )

    def resolve(
        config: EngineConfig | None, host: str | None, port: int | None
    ) -> tuple[Listener, ...]:
        return resolve_listeners(
            config, host, port, default_host="127.0.0.1", default_port=0, handshake_timeout=10.0
        )

    assert resolve(config, None, None) == config.listeners
    assert resolve(config, "127.0.0.1", 0) == (
        Listener(host="127.0.0.1", port=0, handshake_timeout=0.1),
        Listener(host="127.0.0.1", port=5001, handshake_timeout=10.0),
    )
    for without_listeners in (None, parse("workers: [{name: iii-http}]\n")):
        assert resolve(without_listeners, None, 7) == (
            Listener(host="127.0.0.1", port=7, handshake_timeout=10.0),
        )


# --- iii-http-functions: the security settings -------------------------------------------------


def test_without_an_http_functions_entry_there_are_no_security_settings() -> None:
    assert parse("workers: [{name: iii-worker-manager}]\n").http_security is None


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("", HttpSecurity(("*",), block_private_ips=True, require_https=True)),
        ("    config: null\n", HttpSecurity()),
        ("    config: {}\n", HttpSecurity()),
        ("    config: {security: {}}\n", HttpSecurity()),
        ("    config: {security: {url_allowlist: []}}\n", HttpSecurity(("*",))),
        (
            "    config:\n"
            "      security:\n"
            "        url_allowlist: [localhost, 127.0.0.1, '*.example.com']\n"
            "        block_private_ips: false\n"
            "        require_https: false\n",
            HttpSecurity(("localhost", "127.0.0.1", "*.example.com"), False, False),
        ),
    ],
)
def test_the_http_functions_security_block_with_the_engines_defaults(
    block: str, expected: HttpSecurity
) -> None:
    config = parse(f"workers:\n  - name: iii-http-functions\n{block}")
    assert config.http_security == expected
    assert config.notes == ()  # emulated: nothing to say


def test_only_the_first_http_functions_entry_applies() -> None:
    config = parse(
        "workers:\n"
        "  - name: iii-http-functions\n"
        "    config: {security: {require_https: false}}\n"
        "  - name: iii-http-functions\n"
        "    config: {security: {require_https: true}}\n"
    )
    assert config.http_security == HttpSecurity(require_https=False)
    assert config.notes == (
        "config: only the first 'iii-http-functions' entry applies; 'iii-http-functions#1' is "
        "ignored",
    )


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("[1]", "workers[0].config: expected a mapping, got a list"),
        (
            "{secure: {}}",
            "workers[0].config.secure: unknown key (an iii-http-functions block takes security)",
        ),
        ("{security: null}", "workers[0].config.security: expected a mapping, got null"),
        (
            "{security: {allowlist: []}}",
            "workers[0].config.security.allowlist: unknown key (security takes url_allowlist, "
            "block_private_ips, require_https)",
        ),
        (
            "{security: {url_allowlist: '*'}}",
            "workers[0].config.security.url_allowlist: expected a list, got a string ('*')",
        ),
        (
            "{security: {url_allowlist: [1]}}",
            "workers[0].config.security.url_allowlist[0]: expected a string, got an integer (1)",
        ),
        (
            "{security: {require_https: 'no'}}",
            "workers[0].config.security.require_https: expected a boolean, got a string ('no')",
        ),
        (
            "{security: {block_private_ips: null}}",
            "workers[0].config.security.block_private_ips: expected a boolean, got null",
        ),
    ],
)
def test_a_bad_http_functions_block_is_refused_with_its_key_path(block: str, expected: str) -> None:
    assert problem(f"workers:\n  - name: iii-http-functions\n    config: {block}\n") == expected


# --- iii-cron and iii-observability ---------------------------------------------------------------


def test_a_cron_block_gives_the_cron_workers_settings() -> None:
    config = parse(
        "workers:\n"
        "  - name: iii-cron\n"
        "    config: {adapter: {name: redis, config: {redis_url: 'redis://x'}}}\n"
        "  - name: iii-cron\n"
    )
    assert config.builtin_settings == {"iii-cron": CronSettings(adapter="redis")}
    assert config.notes == (
        "config: only the first 'iii-cron' entry applies; 'iii-cron#1' is ignored",
    )
    assert parse("workers: [{name: iii-cron}]\n").builtin_settings == {"iii-cron": CronSettings()}


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (
            "{lock_ttl_ms: 10}",
            "workers[0].config.lock_ttl_ms: unknown key (an iii-cron block takes adapter)",
        ),
        (
            "{adapter: {name: memory}}",
            "workers[0].config.adapter.name: cron adapter 'memory' is not registered "
            "(the engine has kv, redis)",
        ),
        ("[kv]", "workers[0].config: expected a mapping, got a list"),
    ],
)
def test_a_bad_cron_block_is_refused_with_its_key_path(block: str, expected: str) -> None:
    assert problem(f"workers:\n  - name: iii-cron\n    config: {block}\n") == expected


def test_the_first_observability_block_applies_and_unapplied_keys_are_noted() -> None:
    config = parse(
        "workers:\n"
        "  - name: iii-observability\n"
        "    config:\n"
        "      enabled: ${OTEL_ENABLED:true}\n"
        "      service_name: ${SERVICE_NAME:iii-test}\n"
        "      exporter: memory\n"
        "      metrics_enabled: true\n"
        "      logs_console_output: false\n"
        "  - name: iii-observability\n"
        "    config: {enabled: true}\n",
        {"OTEL_ENABLED": "false"},
    )
    assert config.observability == ObservabilitySettings(
        enabled=False,
        service_name="iii-test",
        not_applied=("metrics_enabled", "logs_console_output"),
    )
    assert config.notes == (
        "config: iii-observability keys not applied by the dev engine: metrics_enabled, "
        "logs_console_output; ignored",
        "config: only the first 'iii-observability' entry applies; 'iii-observability#1' is "
        "ignored",
    )
    assert parse("workers: []\n").observability is None


def test_a_bad_observability_block_is_refused_with_its_key_path() -> None:
    assert problem("workers:\n  - name: iii-observability\n    config: {enabled: maybe}\n") == (
        "workers[0].config.enabled: expected a boolean, got a string ('maybe')"
    )
    assert problem("workers:\n  - name: iii-observability\n    config: {otel: {}}\n").startswith(
        "workers[0].config.otel: unknown key (an iii-observability block takes enabled, "
    )
