"""The monitor's JSON API and HTML forms, through Flask's test client (the ASGI path)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers import REDIRECT
from monitor_support import add_user, api_login, csrf_token, db, run

from examples.monitor.store import CheckResult

VALID = {"name": "Billing", "url": "http://127.0.0.1:9/health", "interval": 10, "timeout": 2}


@pytest.fixture
def client(monitor_app: Any) -> Any:
    add_user(monitor_app)
    return monitor_app.test_client()


@pytest.fixture
def signed_in(client: Any) -> Any:
    api_login(client)
    return client


# -- authentication ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/api/monitors"),
        ("POST", "/api/monitors"),
        ("GET", "/api/monitors/1"),
        ("DELETE", "/api/monitors/1"),
        ("GET", "/api/monitors/1/checks"),
    ],
)
def test_api_requires_login_with_json_401(client: Any, method: str, path: str) -> None:
    response = client.open(path, method=method, json=VALID)
    assert response.status_code == 401
    assert response.mimetype == "application/json"
    assert "Location" not in response.headers
    assert "Sign in" in response.json["error"]


def test_html_pages_redirect_to_login(client: Any) -> None:
    response = client.get("/")
    assert response.status_code == REDIRECT
    assert response.headers["Location"].startswith("/login")
    assert client.get("/events").status_code == REDIRECT


def test_api_login(client: Any) -> None:
    bad = client.post("/api/login", json={"email": "ada@example.com", "password": "nope"})
    assert bad.status_code == 401
    missing = client.post("/api/login", json={"email": "ada@example.com"})
    assert missing.status_code == 400
    assert missing.json["fields"] == {"password": ["This field is required."]}
    good = client.post("/api/login", json={"email": "ADA@example.com", "password": "correct horse"})
    assert good.status_code == 200
    assert good.json["email"] == "ada@example.com"
    assert client.get("/api/monitors").json == {"monitors": []}
    assert client.post("/api/logout").status_code == 204
    assert client.get("/api/monitors").status_code == 401


# -- monitors ---------------------------------------------------------------------------


def test_create_get_list_delete(signed_in: Any) -> None:
    created = signed_in.post("/api/monitors", json=VALID)
    assert created.status_code == 201, created.text
    body = created.json
    assert body["name"] == "Billing" and body["status"] == "pending"
    assert body["interval"] == 10 and body["timeout"] == 2.0
    assert created.headers["Location"] == f"/api/monitors/{body['id']}"

    assert signed_in.get(created.headers["Location"]).json == body
    assert [m["id"] for m in signed_in.get("/api/monitors").json["monitors"]] == [body["id"]]

    assert signed_in.delete(f"/api/monitors/{body['id']}").status_code == 204
    assert signed_in.get(f"/api/monitors/{body['id']}").status_code == 404
    assert signed_in.delete(f"/api/monitors/{body['id']}").status_code == 404


def test_create_defaults_interval_and_timeout(signed_in: Any) -> None:
    created = signed_in.post("/api/monitors", json={"name": "x", "url": "https://example.com"})
    assert created.status_code == 201
    assert (created.json["interval"], created.json["timeout"]) == (30, 5.0)


@pytest.mark.parametrize(
    "payload, field",
    [
        ({**VALID, "name": ""}, "name"),
        ({k: v for k, v in VALID.items() if k != "url"}, "url"),
        ({**VALID, "url": "not a url"}, "url"),
        ({**VALID, "url": "ftp://example.com/file"}, "url"),
        ({**VALID, "interval": 0}, "interval"),
        ({**VALID, "interval": "soon"}, "interval"),
        ({**VALID, "interval": 100000}, "interval"),
        ({**VALID, "timeout": 0}, "timeout"),
        ({**VALID, "timeout": 20}, "timeout"),  # longer than the interval
        ({**VALID, "name": ["a", "list"]}, "name"),
        ({**VALID, "interval": True}, "interval"),
        ({**VALID, "colour": "red"}, "colour"),
    ],
)
def test_create_rejects_invalid_input_with_field_errors(
    signed_in: Any, payload: dict[str, Any], field: str
) -> None:
    response = signed_in.post("/api/monitors", json=payload)
    assert response.status_code == 400
    assert response.json["error"] == "Invalid input."
    assert field in response.json["fields"], response.json
    assert all(isinstance(m, str) for m in response.json["fields"][field])
    assert signed_in.get("/api/monitors").json == {"monitors": []}


def test_create_requires_a_json_object(signed_in: Any) -> None:
    form = signed_in.post("/api/monitors", data=VALID)
    assert form.status_code == 415
    assert form.mimetype == "application/json"
    array = signed_in.post("/api/monitors", json=[VALID])
    assert array.status_code == 400
    broken = signed_in.post(
        "/api/monitors", data="{nope", headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 400


def test_unknown_ids_and_paths_are_json_404(signed_in: Any) -> None:
    for path in ("/api/monitors/999", "/api/monitors/999/checks", "/api/nothing-here"):
        response = signed_in.get(path)
        assert response.status_code == 404, path
        assert response.mimetype == "application/json"
        assert "error" in response.json
    assert signed_in.put("/api/monitors").status_code == 405
    assert signed_in.put("/api/monitors").mimetype == "application/json"


def test_other_users_monitors_are_404(monitor_app: Any, signed_in: Any) -> None:
    mine = signed_in.post("/api/monitors", json=VALID).json["id"]
    add_user(monitor_app, "eve@example.com", "other password")
    other = monitor_app.test_client()
    api_login(other, "eve@example.com", "other password")
    assert other.get(f"/api/monitors/{mine}").status_code == 404
    assert other.get(f"/api/monitors/{mine}/checks").status_code == 404
    assert other.delete(f"/api/monitors/{mine}").status_code == 404
    assert other.get("/api/monitors").json == {"monitors": []}
    assert signed_in.get(f"/api/monitors/{mine}").status_code == 200


# -- check history ----------------------------------------------------------------------


def _record(app: Any, monitor_id: int, count: int) -> None:
    for i in range(count):
        ok = i % 3 != 0
        result = CheckResult(
            ok, 200 if ok else None, 10.0 + i if ok else None, None if ok else "timeout", 1e9 + i
        )
        run(db(app).record_check(monitor_id, result))


def test_check_history_is_paginated_newest_first(monitor_app: Any, signed_in: Any) -> None:
    monitor_id = signed_in.post("/api/monitors", json=VALID).json["id"]
    _record(monitor_app, monitor_id, 7)
    url = f"/api/monitors/{monitor_id}/checks"

    first = signed_in.get(url, query_string={"page": 1, "per_page": 3}).json
    assert (first["total"], first["pages"], first["page"], first["per_page"]) == (7, 3, 1, 3)
    times = [c["checked_at"] for c in first["checks"]]
    assert times == sorted(times, reverse=True) and len(times) == 3
    assert first["prev"] is None
    second = signed_in.get(first["next"]).json
    assert second["page"] == 2
    last = signed_in.get(url, query_string={"page": 3, "per_page": 3}).json
    assert len(last["checks"]) == 1 and last["next"] is None
    assert last["checks"][0]["ok"] is False and last["checks"][0]["error"] == "timeout"
    seen = [c["id"] for page in (first, second, last) for c in page["checks"]]
    assert len(set(seen)) == 7
    beyond = signed_in.get(url, query_string={"page": 9, "per_page": 3}).json
    assert beyond["checks"] == [] and beyond["total"] == 7
    assert signed_in.get(url).json["per_page"] == 50

    monitor = signed_in.get(f"/api/monitors/{monitor_id}").json
    assert monitor["status"] == "down" and monitor["last_error"] == "timeout"  # i = 6


@pytest.mark.parametrize(
    "query, field",
    [
        ({"page": 0}, "page"),
        ({"page": "two"}, "page"),
        ({"per_page": 0}, "per_page"),
        ({"per_page": 501}, "per_page"),
        ({"per_page": "x"}, "per_page"),
    ],
)
def test_check_history_rejects_bad_pagination(
    signed_in: Any, query: dict[str, Any], field: str
) -> None:
    monitor_id = signed_in.post("/api/monitors", json=VALID).json["id"]
    response = signed_in.get(f"/api/monitors/{monitor_id}/checks", query_string=query)
    assert response.status_code == 400
    assert list(response.json["fields"]) == [field]


# -- the HTML side: sign-in form, CSRF, dashboard, event stream -------------------------


def _form_login(client: Any) -> None:
    token = csrf_token(client.get("/login").text)
    response = client.post(
        "/login?next=/",
        data={"email": "ada@example.com", "password": "correct horse", "csrf_token": token},
    )
    assert response.status_code == REDIRECT and response.headers["Location"] == "/"


def test_html_login_requires_csrf_token(client: Any) -> None:
    response = client.post("/login", data={"email": "ada@example.com", "password": "correct horse"})
    assert response.status_code == 400
    assert "CSRF" in response.text
    assert client.get("/").status_code == REDIRECT  # still signed out
    token = csrf_token(client.get("/login").text)
    wrong = client.post(
        "/login", data={"email": "ada@example.com", "password": "wrong", "csrf_token": token}
    )
    assert wrong.status_code == 401 and "Wrong email or password" in wrong.text
    _form_login(client)
    assert client.get("/").status_code == 200


def test_login_never_redirects_off_site(client: Any) -> None:
    token = csrf_token(client.get("/login").text)
    response = client.post(
        "/login?next=//evil.example/",
        data={"email": "ada@example.com", "password": "correct horse", "csrf_token": token},
    )
    assert response.headers["Location"] == "/"


def test_add_monitor_form_csrf_and_validation(client: Any) -> None:
    _form_login(client)
    page = client.get("/")
    token = csrf_token(page.text)
    form = {"name": "Site", "url": "http://127.0.0.1:9/", "interval": "5", "timeout": "1"}

    refused = client.post("/monitors", data=form)  # no token
    assert refused.status_code == 400
    assert client.get("/api/monitors").json == {"monitors": []}

    invalid = client.post("/monitors", data={**form, "url": "nope", "csrf_token": token})
    assert invalid.status_code == 400
    assert "Invalid URL" in invalid.text

    scripted = client.post(
        "/monitors",
        data={**form, "interval": "0", "csrf_token": token},
        headers={"X-Requested-With": "fetch"},
    )
    assert scripted.status_code == 400 and "interval" in scripted.json["errors"]

    added = client.post("/monitors", data={**form, "csrf_token": token})
    assert added.status_code == REDIRECT
    dashboard = client.get("/").text
    assert "Site" in dashboard and "Watching Site." in dashboard
    [monitor] = client.get("/api/monitors").json["monitors"]

    no_token = client.post(f"/monitors/{monitor['id']}/delete")
    assert no_token.status_code == 400
    deleted = client.post(f"/monitors/{monitor['id']}/delete", data={"csrf_token": token})
    assert deleted.status_code == REDIRECT
    assert client.get("/api/monitors").json == {"monitors": []}


def test_logout_form(client: Any) -> None:
    _form_login(client)
    token = csrf_token(client.get("/").text)
    assert client.post("/logout", data={"csrf_token": token}).status_code == REDIRECT
    assert client.get("/").status_code == REDIRECT


def test_register(client: Any) -> None:
    token = csrf_token(client.get("/register").text)
    taken = client.post(
        "/register",
        data={"email": "ada@example.com", "password": "long enough", "csrf_token": token},
    )
    assert taken.status_code == 400 and "already an account" in taken.text
    short = client.post(
        "/register", data={"email": "bob@example.com", "password": "short", "csrf_token": token}
    )
    assert short.status_code == 400
    created = client.post(
        "/register",
        data={"email": "bob@example.com", "password": "long enough", "csrf_token": token},
    )
    assert created.status_code == REDIRECT
    assert client.get("/api/monitors").status_code == 200


def test_static_files_and_user_loader_in_a_worker_thread(signed_in: Any) -> None:
    # /static is a sync endpoint: the user loader's await_ runs from a worker thread there.
    for name in ("monitor.css", "chart.js", "dashboard.js"):
        assert signed_in.get(f"/static/{name}").status_code == 200


def test_event_stream_sends_live_updates(monitor_app: Any, signed_in: Any) -> None:
    response = signed_in.get("/events", buffered=False)
    assert response.mimetype == "text/event-stream"
    chunks = iter(response.response)
    assert b"event: ready" in next(chunks)
    created = signed_in.post("/api/monitors", json=VALID).json
    event = next(chunks).decode()
    while event.startswith(":"):  # keep-alive comments
        event = next(chunks).decode()
    assert event.startswith("event: monitor-added")
    data = json.loads(event.split("data: ", 1)[1])
    assert data["id"] == created["id"]
    response.close()
