"""The pieces under the guard: Host parsing, allowed hosts and origins, sizes, roots, ids."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from llamactl.server.apiserver.auth import token_matches
from llamactl.server.apiserver.errors import Forbidden
from llamactl.server.apiserver.policy import AccessPolicy, DeploymentRoots, parse_size, split_host
from llamactl.server.errors import InvalidRequest
from llamactl.server.ids import check_id, id_problem


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("localhost:4501", ("localhost", "4501")),
        ("LocalHost", ("localhost", None)),
        ("[::1]:80", ("::1", "80")),
        ("[::1]", ("::1", None)),
        ("127.0.0.1", ("127.0.0.1", None)),
        ("a:b:c", ("", None)),
        ("host:port", ("", None)),
        ("[::1", ("", None)),
        ("[::1]x", ("", None)),
    ],
)
def test_split_host(header: str, expected: tuple[str, str | None]) -> None:
    assert split_host(header) == expected


def test_the_bind_host_is_served_but_a_wildcard_adds_nothing() -> None:
    assert AccessPolicy().with_bind_host("10.1.2.3").host_allowed("10.1.2.3:4501")
    assert AccessPolicy(token="t").with_bind_host("0.0.0.0").allowed_hosts == ()
    assert not AccessPolicy().with_bind_host("::").host_allowed("evil.example")


@pytest.mark.parametrize("value", ["exa mple.com", "http://x.com", "x.com/path", "", "*x.com"])
def test_a_malformed_allowed_host_is_refused(value: str) -> None:
    with pytest.raises(InvalidRequest, match="--allowed-host"):
        AccessPolicy(allowed_hosts=(value,))


def test_any_host_needs_a_token() -> None:
    with pytest.raises(InvalidRequest, match="DNS rebinding"):
        AccessPolicy(allowed_hosts=("*",))
    assert AccessPolicy(token="t", allowed_hosts=("*",)).host_allowed("anything.example:1")


@pytest.mark.parametrize("value", ["*", "null", "localhost:3000", "ftp://x", "http://x/path", "http://u@x"])
def test_a_malformed_or_catch_all_origin_is_refused(value: str) -> None:
    with pytest.raises(InvalidRequest, match="--allow-origin"):
        AccessPolicy(allowed_origins=(value,))


def test_origins_are_compared_normalized_and_the_servers_own_is_allowed() -> None:
    policy = AccessPolicy(allowed_origins=("HTTP://LocalHost:3000/",))
    assert policy.origin_allowed("http://localhost:3000", "http", "127.0.0.1:4501")
    assert policy.origin_allowed("http://127.0.0.1:4501", "http", "127.0.0.1:4501")
    assert not policy.origin_allowed("http://127.0.0.1:4502", "http", "127.0.0.1:4501")
    assert not policy.origin_allowed("null", "http", "127.0.0.1:4501")


@pytest.mark.parametrize(
    ("text", "size"),
    [("4194304", 4194304), ("512K", 512 * 1024), ("16M", 16 << 20), ("1g", 1 << 30), ("2MiB", 2 << 20)],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-1", "1.5M", "1T"])
def test_parse_size_refuses_what_is_not_a_size(text: str) -> None:
    with pytest.raises(InvalidRequest, match="--max-body-size"):
        parse_size(text)


def test_roots_accept_folders_below_and_refuse_escapes(tmp_path: Path) -> None:
    root, other = tmp_path / "root", tmp_path / "other"
    (root / "app").mkdir(parents=True)
    other.mkdir()
    (root / "out").symlink_to(other)
    roots = DeploymentRoots.of([root / "deployment.yml"])
    assert roots.check(root / "app") == (root / "app").resolve()
    for escape in (other, root / "out", root / ".." / "other"):
        with pytest.raises(Forbidden, match="--deployments-root"):
            roots.check(escape)
    with pytest.raises(Forbidden, match="started with no file"):
        DeploymentRoots().check(root)


@pytest.mark.parametrize("value", ["3f2a-uuid", "a.b_c:d-e", "x" * 128])
def test_valid_ids(value: str) -> None:
    assert check_id(value, "task id") == value


@pytest.mark.parametrize("value", ["", ".", "..", "../x", "a b", "a\0b", "x" * 129, "é"])
def test_invalid_ids_name_the_rule_without_echoing_long_values(value: str) -> None:
    problem = id_problem(value, "task id")
    assert problem is not None and "A-Z a-z 0-9" in problem
    assert len(problem) < 200


def test_token_matching() -> None:
    expected = hashlib.sha256(b"s3cret").digest()
    assert token_matches(b"Bearer s3cret", expected)
    assert token_matches(b"bearer  s3cret ", expected)
    assert not token_matches(b"Basic s3cret", expected)
    assert not token_matches(b"Bearer s3cre", expected)
    assert not token_matches(b"s3cret", expected)
    assert not token_matches(b"", hashlib.sha256(b"").digest())
