"""Who may act through the dashboard: tokens, basic auth, sessions, CSRF, read-only."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from anu_jobs import Silo
from anu_jobs.dashboard import create_app
from tests.acceptance.conftest import BEARER, TOKEN, basic, csrf_of, http, login


async def test_actions_need_credentials(dashboard_silo: Silo) -> None:
    client = dashboard_silo.client
    before = len(await client.runs("quick"))
    async with http(create_app(client, token=TOKEN)) as h:
        page = await h.get("/jobs/quick")
        assert "to trigger, cancel, pause, resume or delete" in page.text
        assert 'action="/action/trigger"' not in page.text
        # A valid CSRF token of this (anonymous) session, from the login form.
        data = {"csrf_token": csrf_of((await h.get("/login")).text), "job": "quick"}
        data["confirm"] = "yes"
        anonymous = await h.post("/action/trigger", data=data)
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        wrong = await h.post(
            "/action/trigger", data=data, headers={"Authorization": "Bearer wrong"}
        )
        assert wrong.status_code == 401
        confirm = await h.get("/action/trigger?job=quick")
        assert confirm.status_code == 303
        assert confirm.headers["location"] == "/login?next=%2Faction%2Ftrigger%3Fjob%3Dquick"
        failed_login = await login(h, token="wrong")
        assert failed_login.status_code == 401 and "Wrong credentials" in failed_login.text
    assert len(await client.runs("quick")) == before


async def test_basic_auth(dashboard_silo: Silo) -> None:
    client = dashboard_silo.client
    async with http(create_app(client, basic_auth=("ops", "pw"))) as h:
        page = await h.get("/login")
        data = {"csrf_token": csrf_of(page.text), "job": "quick", "confirm": "yes"}
        wrong = await h.post("/action/trigger", data=data, headers=basic("ops", "nope"))
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"].startswith("Basic")
        assert (await h.post("/action/trigger", data=data, headers=BEARER)).status_code == 401
        right = await h.post("/action/trigger", data=data, headers=basic("ops", "pw"))
        assert right.status_code == 303
        run_id = parse_qs(urlsplit(right.headers["location"]).query)["run"][0]
        assert (await client.wait("quick", run_id, timeout=10)).done

        form = await h.get("/login")
        assert 'name="username"' in form.text and 'name="token"' not in form.text
        login_data = {"csrf_token": csrf_of(form.text), "username": "ops", "password": "pw"}
        assert (await h.post("/login", data=login_data)).status_code == 303
        assert 'action="/action/trigger"' in (await h.get("/jobs/quick")).text


async def test_without_credentials_actions_are_disabled(dashboard_silo: Silo) -> None:
    async with http(create_app(dashboard_silo.client)) as h:
        page = await h.get("/jobs/quick")
        assert "Actions are disabled" in page.text and 'action="/action/' not in page.text
        data = {"csrf_token": "no form offers one", "job": "quick", "confirm": "yes"}
        refused = await h.post("/action/trigger", data=data, headers=BEARER)
        assert refused.status_code == 403 and "token" in refused.text
        assert "Start the dashboard with a token" in (await h.get("/login")).text


async def test_read_only_shows_no_actions_and_refuses_posts(dashboard_silo: Silo) -> None:
    async with http(create_app(dashboard_silo.client, token=TOKEN, read_only=True)) as h:
        page = await h.get("/jobs/quick", headers=BEARER)
        assert "read-only" in page.text and 'action="/action/' not in page.text
        data = {"csrf_token": "no form offers one", "job": "quick", "confirm": "yes"}
        refused = await h.post("/action/trigger", data=data, headers=BEARER)
        assert refused.status_code == 403 and "read-only" in refused.text


async def test_csrf_tokens_are_checked(dashboard_silo: Silo) -> None:
    app = create_app(dashboard_silo.client, token=TOKEN)
    async with http(app) as h, http(app) as other:
        token = csrf_of((await h.get("/login")).text)
        foreign = csrf_of((await other.get("/login")).text)
        assert token != foreign
        base = {"job": "quick", "confirm": "yes"}
        for bad in ({}, {"csrf_token": "forged"}, {"csrf_token": foreign}):
            refused = await h.post("/action/trigger", data={**base, **bad}, headers=BEARER)
            assert refused.status_code == 403, bad
            assert "CSRF" in refused.text
        # A session-less request (no cookie) has no token that could match.
        fresh = http(app)
        async with fresh:
            cookieless = await fresh.post(
                "/action/trigger", data={**base, "csrf_token": token}, headers=BEARER
            )
        assert cookieless.status_code == 403
        login_without = await h.post("/login", data={"token": TOKEN})
        assert login_without.status_code == 403
        ok = await h.post("/action/trigger", data={**base, "csrf_token": token}, headers=BEARER)
        assert ok.status_code == 303


async def test_login_sets_a_strict_http_only_session(dashboard_silo: Silo) -> None:
    async with http(create_app(dashboard_silo.client, token=TOKEN)) as h:
        anonymous = (await h.get("/")).cookies.get("anu_jobs_session")
        done = await login(h)
        assert done.status_code == 303 and done.headers["location"] == "/"
        cookie = done.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        session = h.cookies.get("anu_jobs_session")
        assert session is not None and session.split(".")[0] != (anonymous or "").split(".")[0]
        assert 'action="/action/cancel"' in (await h.get("/jobs/slow")).text

        h.cookies.set("anu_jobs_session", session[:-2] + ("AA" if session[-2:] != "AA" else "BB"))
        assert 'action="/action/cancel"' not in (await h.get("/jobs/slow")).text

    async with http(create_app(dashboard_silo.client, token=TOKEN)) as h:
        page = await h.get("/login?next=//evil.example/x")
        data = {"csrf_token": csrf_of(page.text), "token": TOKEN, "next": "//evil.example/x"}
        assert (await h.post("/login", data=data)).headers["location"] == "/"
        out = await h.post("/logout", data={"csrf_token": csrf_of((await h.get("/")).text)})
        assert out.status_code == 303
        assert 'action="/action/cancel"' not in (await h.get("/jobs/slow")).text
