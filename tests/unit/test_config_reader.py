"""The app config reader: roost.toml / fly.toml text -> AppConfig, warnings, ConfigError."""

from __future__ import annotations

import ast
import contextlib
import pathlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

import roost.config
from roost.config import (
    VM,
    AppConfig,
    Check,
    Concurrency,
    ConfigError,
    ConfigWarning,
    Mount,
    Restart,
    Service,
    ServicePort,
    load_config,
    parse_config,
)
from roost.config.units import parse_duration, parse_size_mb

FULL_FLY_TOML = """\
# fly.toml app configuration file generated for shop-api
app = "shop-api"
primary_region = "nrt"
kill_signal = "SIGTERM"
kill_timeout = "30s"
swap_size_mb = 512
hostnames = ["Shop.Example.com", "www.shop.example.com."]

[build]
  image = "registry.example.com/shop-api:1.4.2"

[deploy]
  release_command = "bin/migrate"
  strategy = "rolling"

[env]
  PORT = "8080"
  LOG_LEVEL = "info"
  WORKERS = 4
  DEBUG = false

[processes]
  web = "gunicorn app:wsgi --bind '0.0.0.0:8080' --workers 4"
  worker = ["python", "-m", "shop.worker"]

[http_service]
  internal_port = 8080
  force_https = true
  auto_stop_machines = "stop"
  auto_start_machines = true
  min_machines_running = 1
  processes = ["web"]

  [http_service.concurrency]
    type = "requests"
    soft_limit = 200
    hard_limit = 250

  [[http_service.checks]]
    grace_period = "10s"
    interval = "30s"
    method = "GET"
    timeout = "5s"
    path = "/healthz"

[[services]]
  internal_port = 5432
  protocol = "tcp"
  processes = ["worker"]

  [[services.ports]]
    port = 5432
    handlers = ["proxy_proto"]

  [[services.ports]]
    port = 8443
    handlers = ["tls", "http"]
    force_https = false

  [services.concurrency]
    type = "connections"
    soft_limit = 50
    hard_limit = 100

  [[services.tcp_checks]]
    interval = "15s"
    timeout = "2s"
    grace_period = "1s"

  [[services.http_checks]]
    interval = 10000
    timeout = 2000
    method = "get"
    path = "/status"
    [services.http_checks.headers]
      Host = "shop.internal"

[checks]
  [checks.worker_alive]
    type = "tcp"
    port = 9090
    interval = "20s"
    timeout = "3s"
    grace_period = "5s"
    processes = ["worker"]

[mounts]
  source = "shop_data"
  destination = "/data"
  processes = ["web"]

[[vm]]
  size = "shared-cpu-2x"
  memory = "1gb"
  processes = ["web"]

[[vm]]
  size = "performance-2x"
  processes = ["worker"]

[[restart]]
  policy = "on-failure"
  retries = 5
  processes = ["worker"]

[[statics]]
  guest_path = "/app/public"
  url_prefix = "/static/"

[scale]
  count = 2
"""

EXPECTED_FULL = AppConfig(
    app="shop-api",
    primary_region="nrt",
    image="registry.example.com/shop-api:1.4.2",
    env=(("PORT", "8080"), ("LOG_LEVEL", "info"), ("WORKERS", "4"), ("DEBUG", "false")),
    processes=(
        ("web", ("gunicorn", "app:wsgi", "--bind", "0.0.0.0:8080", "--workers", "4")),
        ("worker", ("python", "-m", "shop.worker")),
    ),
    services=(
        Service(
            name="http_service",
            internal_port=8080,
            ports=(
                ServicePort(port=80, handlers=("http",), force_https=True),
                ServicePort(port=443, handlers=("tls", "http")),
            ),
            concurrency=Concurrency(type="requests", soft_limit=200, hard_limit=250),
            processes=("web",),
            checks=(
                Check(
                    name="http_service.checks.0",
                    type="http",
                    path="/healthz",
                    interval=30.0,
                    timeout=5.0,
                    grace_period=10.0,
                ),
            ),
            force_https=True,
        ),
        Service(
            name="services.0",
            internal_port=5432,
            ports=(
                ServicePort(port=5432, handlers=("proxy_proto",)),
                ServicePort(port=8443, handlers=("tls", "http")),
            ),
            concurrency=Concurrency(type="connections", soft_limit=50, hard_limit=100),
            processes=("worker",),
            checks=(
                Check(
                    name="services.0.tcp_checks.0",
                    type="tcp",
                    interval=15.0,
                    timeout=2.0,
                    grace_period=1.0,
                ),
                Check(
                    name="services.0.http_checks.0",
                    type="http",
                    path="/status",
                    method="GET",
                    interval=10.0,
                    timeout=2.0,
                    headers=(("Host", "shop.internal"),),
                ),
            ),
        ),
    ),
    checks=(
        Check(
            name="worker_alive",
            type="tcp",
            port=9090,
            interval=20.0,
            timeout=3.0,
            grace_period=5.0,
            processes=("worker",),
        ),
    ),
    mounts=(Mount(source="shop_data", destination="/data", processes=("web",)),),
    vms=(
        VM(size="shared-cpu-2x", memory_mb=1024, cpus=2, cpu_kind="shared", processes=("web",)),
        VM(
            size="performance-2x",
            memory_mb=4096,
            cpus=2,
            cpu_kind="performance",
            processes=("worker",),
        ),
    ),
    restart=(Restart(policy="on-failure", max_retries=5, processes=("worker",)),),
    kill_signal="SIGTERM",
    kill_timeout=30.0,
    count=2,
    hostnames=("shop.example.com", "www.shop.example.com"),
)


def parse(text: str) -> AppConfig:
    return parse_config(text, filename="fly.toml").config


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, filename="fly.toml")
    return info.value


def messages(text: str) -> list[str]:
    return [str(e) for e in error_of(text).errors]


def warnings_of(text: str) -> list[str]:
    return [str(w) for w in parse_config(text, filename="fly.toml").warnings]


# -- whole files ----------------------------------------------------------------------------


def test_full_fly_toml_parses_to_expected_records() -> None:
    """A realistic fly.toml using every supported section parses to the expected records."""
    assert parse(FULL_FLY_TOML) == EXPECTED_FULL


def test_full_fly_toml_warns_only_about_fly_keys_roost_ignores() -> None:
    """The fly-only keys in a realistic file are warnings naming key and line, nothing else."""
    assert warnings_of(FULL_FLY_TOML) == [
        "fly.toml:6: swap_size_mb: not supported by roost; ignored",
        "fly.toml:12: deploy: not supported by roost; ignored",
        "fly.toml:106: statics: not supported by roost; ignored",
    ]


def test_minimal_config_is_all_defaults() -> None:
    """Only ``app`` given: every other field is the record's default."""
    assert parse('app = "hello"\n') == AppConfig(app="hello")


def test_http_service_defaults() -> None:
    """An empty [http_service]: port 8080, connections, soft 20, no hard limit, 80 + 443."""
    service = parse('app = "a"\n[http_service]\n').services[0]
    assert service == Service(
        name="http_service",
        internal_port=8080,
        ports=(
            ServicePort(port=80, handlers=("http",)),
            ServicePort(port=443, handlers=("tls", "http")),
        ),
    )
    assert service.concurrency == Concurrency(type="connections", soft_limit=20, hard_limit=None)


def test_services_default_internal_port_and_protocol() -> None:
    """A [[services]] entry without internal_port/protocol gets 8080/tcp."""
    service = parse('app = "a"\n[[services]]\n[[services.ports]]\nport = 80\n').services[0]
    assert (service.name, service.internal_port, service.protocol) == ("services.0", 8080, "tcp")


def test_default_self_signed_on_http_service_and_ports() -> None:
    """``default_self_signed`` is read on [http_service], [[services]] and their ports."""
    text = (
        'app = "a"\n[http_service]\ndefault_self_signed = true\n'
        "[[services]]\ninternal_port = 9\ndefault_self_signed = false\n"
        '[[services.ports]]\nport = 443\nhandlers = ["tls", "http"]\n'
        "default_self_signed = true\n"
    )
    parsed = parse_config(text, filename="fly.toml")
    http, svc = parsed.config.services
    assert http.default_self_signed and not svc.default_self_signed
    assert svc.ports[0].default_self_signed
    assert not parsed.warnings


def test_default_self_signed_of_wrong_type_is_an_error() -> None:
    """``default_self_signed = "yes"`` names the key and what was expected."""
    text = 'app = "a"\n[http_service]\ndefault_self_signed = "yes"\n'
    assert "http_service.default_self_signed" in str(error_of(text))


def test_services_as_a_single_table_is_accepted() -> None:
    """``[services]`` (not an array) reads as one service, as flyctl allows."""
    service = parse('app = "a"\n[services]\ninternal_port = 9\n').services[0]
    assert (service.name, service.internal_port) == ("services.0", 9)


def test_numeric_string_ports_are_accepted() -> None:
    """``internal_port = "8080"`` is read as 8080, as flyctl does."""
    assert (
        parse('app = "a"\n[http_service]\ninternal_port = "8081"\n').services[0].internal_port
        == 8081
    )


def test_load_config_reads_a_file(tmp_path: pathlib.Path) -> None:
    """load_config reads UTF-8 (with or without a BOM) and names the file in messages."""
    path = tmp_path / "roost.toml"
    path.write_bytes(b'\xef\xbb\xbfapp = "demo"\nbogus = 1\n')
    parsed = load_config(path)
    assert parsed.config.app == "demo"
    assert [str(w) for w in parsed.warnings] == [f"{path}:2: bogus: unknown key"]


def test_load_config_unreadable_file_names_it(tmp_path: pathlib.Path) -> None:
    """A missing file is a ConfigError naming the file."""
    missing = tmp_path / "fly.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert str(info.value) == f"{missing}: cannot read: No such file or directory"


def test_load_config_rejects_non_utf8(tmp_path: pathlib.Path) -> None:
    """Bytes that are not UTF-8 are a ConfigError, not a UnicodeDecodeError."""
    path = tmp_path / "fly.toml"
    path.write_bytes(b'app = "\xff"\n')
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_config(path)


# -- error format and collection ------------------------------------------------------------


def test_error_str_leaves_out_missing_parts() -> None:
    """str(ConfigError) is ``file:line: key: message`` without the parts that are None."""
    assert str(ConfigError("fly.toml", 3, "app", "bad")) == "fly.toml:3: app: bad"
    assert str(ConfigError("fly.toml", None, "app", "bad")) == "fly.toml: app: bad"
    assert str(ConfigError("fly.toml", 3, None, "bad")) == "fly.toml:3: bad"
    assert str(ConfigWarning("fly.toml", None, None, "hm")) == "fly.toml: hm"


def test_missing_app_is_an_error_without_line() -> None:
    """No ``app`` key: the exact message has no line number."""
    err = error_of('primary_region = "ams"\n')
    assert str(err) == "fly.toml: app: missing required key"
    assert (err.filename, err.line, err.key) == ("fly.toml", None, "app")


def test_single_error_lists_itself() -> None:
    """A lone error's ``errors`` is a tuple holding just that error."""
    err = error_of('app = "Bad_Name"\n')
    assert err.errors == (err,)


def test_wrong_type_names_file_line_key_and_expectation() -> None:
    """``internal_port = "abc"`` says what was expected and what was found."""
    text = 'app = "a"\n\n[http_service]\n  internal_port = "abc"\n'
    assert str(error_of(text)) == (
        "fly.toml:4: http_service.internal_port: expected an integer 1–65535, got string 'abc'"  # noqa: RUF001
    )


def test_negative_soft_limit_is_an_error() -> None:
    """Concurrency limits must be positive integers."""
    text = 'app = "a"\n[http_service.concurrency]\nsoft_limit = -1\n'
    assert str(error_of(text)) == (
        "fly.toml:3: http_service.concurrency.soft_limit: "
        "expected a positive integer, got integer -1"
    )


def test_handlers_as_a_string_is_an_error() -> None:
    """``handlers = "http"`` (not an array) names the key and the value found."""
    text = 'app = "a"\n[[services]]\n[[services.ports]]\nport = 80\nhandlers = "http"\n'
    assert str(error_of(text)) == (
        "fly.toml:5: services.0.ports.0.handlers: expected an array of strings, got string 'http'"
    )


def test_unsupported_handler_names_the_value() -> None:
    """fly's pg_tls handler is refused, naming it, on the right element's line."""
    text = (
        'app = "a"\n[[services]]\n[[services.ports]]\nport = 80\n'
        '[[services.ports]]\nport = 5432\nhandlers = ["pg_tls"]\n'
    )
    assert str(error_of(text)) == (
        "fly.toml:7: services.0.ports.1.handlers: "
        "unsupported handler 'pg_tls' (use http, tls or proxy_proto)"
    )


def test_multiple_errors_are_collected_in_line_order() -> None:
    """Every error in a file is reported at once, sorted by line."""
    text = (
        'app = "a"\n'
        "kill_timeout = 0\n"
        "[http_service]\n"
        'internal_port = "x"\n'
        "[http_service.concurrency]\n"
        'type = "bytes"\n'
        "[mounts]\n"
        'source = "data"\n'
        'destination = "data"\n'
    )
    err = error_of(text)
    assert [(e.line, e.key) for e in err.errors] == [
        (2, "kill_timeout"),
        (4, "http_service.internal_port"),
        (6, "http_service.concurrency.type"),
        (9, "mounts.destination"),
    ]
    assert str(err) == "\n".join(str(e) for e in err.errors)
    assert (err.line, err.key) == (2, "kill_timeout")


def test_syntax_error_has_tomllib_line() -> None:
    """A TOML syntax error becomes a ConfigError on tomllib's line, with no key."""
    err = error_of('app = "a"\n\n[http_service\ninternal_port = 1\n')
    assert (err.line, err.key) == (3, None)
    assert str(err).startswith("fly.toml:3: invalid TOML: ")


def test_syntax_error_at_end_of_document_points_at_last_line() -> None:
    """ "At end of document" errors (unterminated strings) name the last written line."""
    err = error_of('app = "a"\ncmd = """never closed\n\n')
    assert err.line == 2
    assert str(err) == "fly.toml:2: invalid TOML: Unterminated string"


def test_duplicate_key_is_a_syntax_error() -> None:
    """A key written twice is reported on the second occurrence."""
    assert error_of('app = "a"\napp = "b"\n').line == 2


# -- warnings -------------------------------------------------------------------------------


def test_unknown_key_warns_with_dotted_path_and_line() -> None:
    """A misspelt key is a warning naming its full dotted path and line."""
    text = 'app = "a"\n[http_service]\n[http_service.concurrency]\nsof_limit = 5\n'
    assert warnings_of(text) == ["fly.toml:4: http_service.concurrency.sof_limit: unknown key"]


def test_unknown_key_in_array_element_names_index() -> None:
    """Unknown keys inside ``[[services.ports]]`` carry the element indexes."""
    text = 'app = "a"\n[[services]]\n[[services.ports]]\nport = 1\nprot = 2\n'
    assert warnings_of(text) == ["fly.toml:5: services.0.ports.0.prot: unknown key"]


def test_unknown_key_with_odd_characters_is_quoted() -> None:
    """Keys that are not bare TOML keys are quoted in the dotted path."""
    assert warnings_of('app = "a"\n"odd key" = 1\n') == ['fly.toml:2: "odd key": unknown key']


def test_build_keys_other_than_image_warn() -> None:
    """``[build]`` dockerfile/builder are accepted but warned as not supported."""
    text = 'app = "a"\n[build]\ndockerfile = "Dockerfile"\nbuilder = "paketo"\n'
    assert warnings_of(text) == [
        "fly.toml:3: build.dockerfile: not supported by roost; ignored",
        "fly.toml:4: build.builder: not supported by roost; ignored",
    ]


def test_ignored_fly_sections_warn_once_each() -> None:
    """[experimental] and [metrics] warn once each, not once per key inside."""
    text = 'app = "a"\n[experimental]\nauto_rollback = true\ncmd = ["x"]\n[metrics]\nport = 9\n'
    assert warnings_of(text) == [
        "fly.toml:2: experimental: not supported by roost; ignored",
        "fly.toml:5: metrics: not supported by roost; ignored",
    ]


# -- fields ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Shop", "-shop", "shop_api", "", "a" * 64])
def test_invalid_app_names_are_errors(name: str) -> None:
    """App names are 1–63 lowercase letters, digits or '-', not starting with '-'."""  # noqa: RUF002
    assert error_of(f'app = "{name}"\n').key == "app"


def test_app_of_wrong_type() -> None:
    """``app = 5`` says a string was expected."""
    assert messages("app = 5\n") == ["fly.toml:1: app: expected a string, got integer 5"]


def test_env_scalars_become_strings() -> None:
    """Numbers and booleans in [env] become strings as fly converts them."""
    config = parse('app = "a"\n[env]\nA = 1\nB = true\nC = 1.5\nD = "x"\n')
    assert config.env == (("A", "1"), ("B", "true"), ("C", "1.5"), ("D", "x"))


def test_env_tables_and_arrays_are_errors() -> None:
    """An array or table in [env] is an error naming the variable."""
    assert messages('app = "a"\n[env]\nA = [1]\nB = { c = 1 }\n') == [
        "fly.toml:3: env.A: expected a string, number or boolean, got an array",
        "fly.toml:4: env.B: expected a string, number or boolean, got a table",
    ]


def test_processes_split_with_shlex_or_given_as_array() -> None:
    """A command string is split like a shell would; an array is taken as argv."""
    config = parse('app = "a"\n[processes]\nweb = "run --name \'my app\'"\njob = ["x", "y z"]\n')
    assert config.processes == (("web", ("run", "--name", "my app")), ("job", ("x", "y z")))


def test_empty_process_command_is_an_error() -> None:
    """An empty command (string or array) is refused."""
    assert messages('app = "a"\n[processes]\nweb = ""\njob = []\n') == [
        "fly.toml:3: processes.web: empty command",
        "fly.toml:4: processes.job: empty command",
    ]


def test_unclosed_quote_in_process_command_is_an_error() -> None:
    """shlex failures are ConfigErrors naming the group."""
    assert error_of('app = "a"\n[processes]\nweb = "run \'oops"\n').key == "processes.web"


def test_unknown_process_group_reference_is_an_error() -> None:
    """A service naming a group absent from [processes] is an error on that key."""
    text = 'app = "a"\n[processes]\nweb = "run"\n[http_service]\nprocesses = ["wbe"]\n'
    assert messages(text) == [
        "fly.toml:5: http_service.processes: process group 'wbe' is not defined in [processes]"
    ]


def test_without_processes_only_the_app_group_exists() -> None:
    """With no [processes], ``processes = ["app"]`` is fine and other names are errors."""
    assert parse('app = "a"\n[http_service]\nprocesses = ["app"]\n').services[0].processes == (
        "app",
    )
    assert error_of('app = "a"\n[[vm]]\nprocesses = ["web"]\n').key == "vm.0.processes"


@pytest.mark.parametrize(("written", "stored"), [("SIGTERM", "SIGTERM"), ("sigusr1", "SIGUSR1")])
def test_kill_signal_is_normalised(written: str, stored: str) -> None:
    """Signal names known to Python are accepted, stored upper-case."""
    assert parse(f'app = "a"\nkill_signal = "{written}"\n').kill_signal == stored


def test_unknown_kill_signal_is_an_error() -> None:
    """A made-up signal name is refused."""
    assert messages('app = "a"\nkill_signal = "SIGNOPE"\n') == [
        "fly.toml:2: kill_signal: expected a signal name such as 'SIGINT' or 'SIGTERM', "
        "got string 'SIGNOPE'"
    ]


@pytest.mark.parametrize(("written", "seconds"), [("5", 5.0), ('"1m30s"', 90.0), ('"500ms"', 0.5)])
def test_kill_timeout_forms(written: str, seconds: float) -> None:
    """kill_timeout: an int is seconds; strings are Go durations."""
    assert parse(f'app = "a"\nkill_timeout = {written}\n').kill_timeout == seconds


@pytest.mark.parametrize("written", ["0", "301", '"6m"', '"soon"', "true"])
def test_kill_timeout_out_of_range_is_an_error(written: str) -> None:
    """kill_timeout must be a duration > 0 and ≤ 300 s."""
    [message] = messages(f'app = "a"\nkill_timeout = {written}\n')
    assert message.startswith("fly.toml:2: kill_timeout: expected a duration > 0 and ≤ 300s")


def test_check_bare_number_durations_are_milliseconds() -> None:
    """In checks, ``interval = 10000`` is 10 s, as flyctl reads it."""
    text = 'app = "a"\n[[http_service.checks]]\ninterval = 10000\ntimeout = 500\n'
    check = parse(text).services[0].checks[0]
    assert (check.interval, check.timeout) == (10.0, 0.5)


def test_zero_check_interval_is_an_error_but_zero_grace_is_fine() -> None:
    """Intervals must be > 0; a grace period may be 0."""
    text = 'app = "a"\n[checks.c]\ntype = "tcp"\ninterval = "0s"\ngrace_period = "0s"\n'
    assert [e.key for e in error_of(text).errors] == ["checks.c.interval"]


def test_top_level_check_needs_a_type() -> None:
    """``[checks.NAME]`` without ``type`` is an error at the check's header line."""
    assert messages('app = "a"\n[checks.alive]\nport = 80\n') == [
        "fly.toml:2: checks.alive.type: missing required key"
    ]


def test_https_check_protocol_warns() -> None:
    """``protocol = "https"`` on a check is warned about; checks use plain http."""
    text = 'app = "a"\n[checks.c]\ntype = "http"\nprotocol = "https"\n'
    assert warnings_of(text) == [
        "fly.toml:4: checks.c.protocol: not supported by roost; ignored (checks use plain http)"
    ]


def test_soft_limit_above_hard_limit_is_an_error() -> None:
    """soft_limit must not exceed hard_limit."""
    text = 'app = "a"\n[http_service.concurrency]\nsoft_limit = 30\nhard_limit = 25\n'
    assert messages(text) == [
        "fly.toml:3: http_service.concurrency.soft_limit: soft_limit 30 is above hard_limit 25"
    ]


def test_hard_limit_alone_below_default_soft_lowers_soft() -> None:
    """Only ``hard_limit = 10``: the soft limit becomes 10 rather than the default 20."""
    service = parse('app = "a"\n[http_service.concurrency]\nhard_limit = 10\n').services[0]
    assert service.concurrency == Concurrency(soft_limit=10, hard_limit=10)


def test_port_out_of_range_and_missing_port() -> None:
    """``[[services.ports]]`` needs a port 1–65535."""  # noqa: RUF002
    text = 'app = "a"\n[[services]]\n[[services.ports]]\nport = 70000\n[[services.ports]]\n'
    assert messages(text) == [
        "fly.toml:4: services.0.ports.0.port: expected an integer 1–65535, got integer 70000",  # noqa: RUF001
        "fly.toml:5: services.0.ports.1.port: missing required key",
    ]


def test_mounts_as_array_of_tables() -> None:
    """``[[mounts]]`` gives one Mount per entry."""
    entry = '[[mounts]]\nsource = "{0}"\ndestination = "/{0}"\n'
    text = 'app = "a"\n' + entry.format("a") + entry.format("b")
    assert [m.destination for m in parse(text).mounts] == ["/a", "/b"]


def test_mount_needs_source_and_absolute_destination() -> None:
    """A mount without source, or with a relative destination, is an error."""
    assert messages('app = "a"\n[mounts]\ndestination = "data"\n') == [
        "fly.toml:2: mounts.source: missing required key",
        "fly.toml:3: mounts.destination: "
        "expected an absolute path other than '/', got string 'data'",
    ]


@pytest.mark.parametrize(
    ("written", "mb"), [('"512mb"', 512), ('"1gb"', 1024), ("2048", 2048), ('"2GB"', 2048)]
)
def test_vm_memory_forms(written: str, mb: int) -> None:
    """VM memory may be "512mb", "1gb" or a number of megabytes."""
    assert parse(f'app = "a"\n[[vm]]\nmemory = {written}\n').vms[0].memory_mb == mb


def test_vm_bad_memory_is_an_error() -> None:
    """Memory that is not a size is refused."""
    assert messages('app = "a"\n[[vm]]\nmemory = "lots"\n') == [
        "fly.toml:3: vm.0.memory: expected a size like '512mb' or '1gb', or megabytes, "
        "got string 'lots'"
    ]


def test_restart_never_means_no() -> None:
    """fly's ``policy = "never"`` is Roost's "no"; ``max_retries`` is accepted too."""
    config = parse('app = "a"\n[[restart]]\npolicy = "never"\nmax_retries = 2\n')
    assert config.restart == (Restart(policy="no", max_retries=2),)


def test_unknown_restart_policy_is_an_error() -> None:
    """Only always / on-failure / no (never) are policies."""
    [message] = messages('app = "a"\n[[restart]]\npolicy = "sometimes"\n')
    assert message.startswith("fly.toml:3: restart.0.policy: expected one of 'always', ")


def test_scale_count_range() -> None:
    """``[scale] count`` is 0–1000."""  # noqa: RUF002
    assert parse('app = "a"\n[scale]\ncount = 0\n').count == 0
    assert error_of('app = "a"\n[scale]\ncount = 1001\n').key == "scale.count"


def test_invalid_hostname_is_an_error() -> None:
    """Hostnames must be valid DNS names."""
    assert messages('app = "a"\nhostnames = ["ok.example.com", "bad_name.example.com"]\n') == [
        "fly.toml:2: hostnames: invalid hostname 'bad_name.example.com'"
    ]


def test_date_value_is_described() -> None:
    """TOML dates in the wrong place are named in the message."""
    assert messages("app = 1979-05-27\n") == [
        "fly.toml:1: app: expected a string, got date 1979-05-27"
    ]


# -- durations and sizes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5s", 5.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("0", 0.0),
        ("250us", 0.00025),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    """Go duration syntax is read as seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "-5s", "5 s", "s", "1d", "5sec"])
def test_parse_duration_rejects(text: str) -> None:
    """Anything but number+unit groups is a ValueError."""
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "mb"), [("256", 256), ("512mb", 512), ("1gb", 1024), ("0.5gb", 512)]
)
def test_parse_size_mb(text: str, mb: int) -> None:
    """Sizes are read as whole megabytes."""
    assert parse_size_mb(text) == mb


# -- robustness and purity ------------------------------------------------------------------

_FRAGMENTS = [
    'app = "a"\n',
    "app = 3\n",
    "[http_service]\n",
    "[http_service.concurrency]\n",
    "[[services]]\n",
    "[[services.ports]]\n",
    "[[services.tcp_checks]]\n",
    "[checks.c]\n",
    "[[vm]]\n",
    "[mounts]\n",
    "[processes]\n",
    "[env]\n",
    "[[restart]]\n",
    "[scale]\n",
    'internal_port = "x"\n',
    "internal_port = 80\n",
    "port = 0\n",
    'handlers = ["http", 1]\n',
    'handlers = "tls"\n',
    "soft_limit = -1\n",
    "hard_limit = 5\n",
    'type = "http"\n',
    'interval = "1x"\n',
    "interval = 1e309\n",
    'memory = "9zb"\n',
    'processes = ["web"]\n',
    'web = "a \'b"\n',
    "count = 99999\n",
    'destination = "x"\n',
    'policy = "never"\n',
    "x = { y = [1, {z = 2}] }\n",
    'hostnames = ["-x-"]\n',
    "kill_timeout = -1\n",
    '"" = 1\n',
    "= 1\n",
]


@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=12).map("".join))
def test_config_shaped_text_only_ever_raises_config_error(text: str) -> None:
    """Config-shaped fragments in any order give a config or a ConfigError, nothing else."""
    try:
        parse_config(text, filename="fly.toml")
    except ConfigError as err:
        assert all(str(e).startswith("fly.toml") for e in err.errors)


@given(st.text())
def test_arbitrary_text_only_ever_raises_config_error(text: str) -> None:
    """Any text at all gives a config or a ConfigError, nothing else."""
    with contextlib.suppress(ConfigError):
        parse_config(text, filename="fly.toml")


@pytest.mark.parametrize(
    "text",
    [
        'app = "a"\nkill_timeout = ' + "9" * 400,
        'app = "a"\n[checks.c]\ntype = "tcp"\ninterval = ' + "9" * 400,
        'app = "a"\n[env]\nA = ' + "9" * 5000,
        'app = "a"\nx = ' + "[" * 5000 + "]" * 5000,
    ],
)
def test_huge_numbers_and_deep_nesting_are_config_errors(text: str) -> None:
    """Numbers too big for a float or for int(), and absurd nesting, are ConfigErrors."""
    with pytest.raises(ConfigError):
        parse_config(text, filename="fly.toml")


def test_config_package_imports_nothing_impure() -> None:
    """The config core imports no asyncio/socket/ssl/time/random (time is passed in)."""
    banned = {"asyncio", "socket", "ssl", "time", "random", "subprocess", "threading"}
    package = pathlib.Path(roost.config.__file__).parent
    for source in package.glob("*.py"):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not {n.split(".")[0] for n in names} & banned, (source.name, names)
