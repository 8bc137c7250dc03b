"""Access tuples (fleetcheck.rbac.access): parsing, rendering, review attributes, tables;
token claims (fleetcheck.rbac.tokens); the SelfSubjectReview fallback (fleetcheck.rbac.api)."""

from __future__ import annotations

import base64
import json

import pytest
from fleetcheck import Unknown
from fleetcheck.rbac import api, tokens
from fleetcheck.rbac.access import Access, Decision, outcome_rows


@pytest.mark.parametrize(("entry", "rendered", "attrs"), [
    ({"verb": "create", "resource": "pods", "namespace": "default"},
     "create pods in namespace default",
     {"verb": "create", "resource": "pods", "group": "", "namespace": "default"}),
    ({"verb": "get", "resource": "nodes"}, "get nodes cluster-wide",
     {"verb": "get", "resource": "nodes", "group": ""}),
    ({"verb": "create", "resource": "deployments", "namespace": "team-a"},
     "create deployments.apps in namespace team-a",
     {"verb": "create", "resource": "deployments", "group": "apps", "namespace": "team-a"}),
    ({"verb": "create", "resource": "pods/exec", "namespace": "kube-system"},
     "create pods/exec in namespace kube-system",
     {"verb": "create", "resource": "pods", "group": "", "subresource": "exec",
      "namespace": "kube-system"}),
    ({"verb": "list", "resource": "widgets.example.com"}, "list widgets.example.com cluster-wide",
     {"verb": "list", "resource": "widgets", "group": "example.com"}),
    ({"verb": "get", "resource": "secrets", "namespace": "prod", "name": "db"},
     "get secrets named db in namespace prod",
     {"verb": "get", "resource": "secrets", "group": "", "namespace": "prod", "name": "db"}),
    ({"verb": "get", "resource": "widgets"}, "get widgets cluster-wide (core group assumed)",
     {"verb": "get", "resource": "widgets", "group": ""}),
    ({"verb": "get", "resource": "pods", "subresource": "log", "group": ""},
     "get pods/log cluster-wide",
     {"verb": "get", "resource": "pods", "group": "", "subresource": "log"}),
])
def test_parse_render_attributes(entry, rendered, attrs):
    access = Access.parse(entry)
    assert access.render() == rendered
    assert access.attributes() == attrs


def test_can_i():
    assert Access.parse({"verb": "create", "resource": "deployments", "namespace": "a"}).can_i() \
        == "kubectl auth can-i create deployments.apps -n a"
    assert Access.parse({"verb": "get", "resource": "nodes"}).can_i() == \
        "kubectl auth can-i get nodes --all-namespaces"


def test_outcome_rows_mark_failures():
    a = Access.parse({"verb": "get", "resource": "nodes"})
    b = Access.parse({"verb": "create", "resource": "pods", "namespace": "x"})
    rows = outcome_rows([Decision(a, True, reason="RBAC: allowed by X"), Decision(b, False)],
                        expect_allowed=True)
    assert rows[0] == (1, "get", "nodes", "(cluster-wide)", "allowed", "allowed", "ok",
                       "RBAC: allowed by X")
    assert rows[1] == (2, "create", "pods", "x", "allowed", "denied", "FAIL", "-")


def _jwt(payload: dict) -> str:
    def enc(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")
    return f"{enc({'alg': 'RS256'})}.{enc(payload)}.c2lnbmF0dXJl"


def test_token_claims_and_lifetime():
    claims = tokens.claims(_jwt({"sub": "system:serviceaccount:a:b", "iat": 1000, "exp": 1600}))
    assert claims["sub"] == "system:serviceaccount:a:b"
    assert tokens.lifetime_s(claims) == 600
    assert tokens.check_lifetime(claims, 600) == ""
    assert tokens.check_lifetime(claims, 3600) == "token lifetime exp-iat = 600s, requested 3600s"
    assert tokens.check_lifetime({"sub": "x"}, 600) == "the token has no exp/iat claims"
    assert tokens.expiry(claims).isoformat() == "1970-01-01T00:26:40+00:00"


@pytest.mark.parametrize("bad", ["abc", "a.b", "a.!!!.c", f"a.{base64.b64encode(b'[1]').decode()}.c"])
def test_token_not_a_jwt_never_echoes_token(bad):
    with pytest.raises(tokens.TokenError) as info:
        tokens.claims(bad)
    assert bad not in str(info.value)


class _Response:
    def __init__(self, status: int, body: dict) -> None:
        self.status, self._body, self.headers = status, body, {}

    def read(self) -> bytes:
        return json.dumps(self._body).encode()


class _FakeClient:
    """Serves SelfSubjectReview only at the versions in ``served``."""

    def __init__(self, served: dict[str, int]) -> None:
        self.served = served
        self.paths: list[str] = []

    def param_serialize(self, method, resource_path, body, header_params, auth_settings,
                        query_params=None):
        return method, resource_path, header_params, body, None

    def call_api(self, method, url, headers, body, post, _request_timeout=None):
        self.paths.append(url)
        version = url.split("/")[3]
        status = self.served.get(version, 404)
        info = {"username": "alice", "groups": ["dev", "system:authenticated"]}
        return _Response(status, {"status": {"userInfo": info}} if status == 201 else {})


def test_self_subject_review_falls_back_to_older_versions():
    client = _FakeClient({"v1beta1": 201})
    who = api.self_subject_review(client, (1, 1))
    assert who.username == "alice" and who.groups == ["dev", "system:authenticated"]
    assert who.method == "SelfSubjectReview authentication.k8s.io/v1beta1"
    assert [p.split("/")[3] for p in client.paths] == ["v1", "v1beta1"]


def test_self_subject_review_absent_and_rejected():
    assert api.self_subject_review(_FakeClient({}), (1, 1)) is None
    with pytest.raises(Unknown, match="rejected the credentials"):
        api.self_subject_review(_FakeClient({"v1": 401}), (1, 1))
