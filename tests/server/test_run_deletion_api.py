"""`DELETE /api/v1/runs/{run}`: an ended run goes; a running one, a bad id and a token
without the admin scope are refused."""

from __future__ import annotations

import httpx

from conveyor.server.app import create_app
from conveyor.server.auth import Scope, Tokens
from tests.server.conftest import Server
from tests.server.test_api import FANOUT, started, until_waiting


async def test_an_ended_run_is_deleted_and_a_running_one_refused(server: Server) -> None:
    await server.register(FANOUT)
    failed = await started(server, n=2, fail_at=0)
    await server.engine.client.watch(failed, timeout=30)
    waiting = await started(server, n=1)
    await until_waiting(server, waiting)

    refused = await server.http.delete(f"/api/v1/runs/{waiting}")
    assert refused.status_code == 409, refused.text
    assert "still running" in refused.json()["detail"]
    assert (await server.http.get(f"/api/v1/runs/{waiting}")).status_code == 200

    deleted = await server.http.delete(f"/api/v1/runs/{failed[:8]}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"run_id": failed, "deleted": True}
    assert (await server.http.get(f"/api/v1/runs/{failed}")).status_code == 404
    assert (await server.http.get(f"/api/v1/runs/{failed}/logs")).status_code == 404
    listed = (await server.http.get("/api/v1/runs?workflow=fan")).json()["items"]
    assert [row["run_id"] for row in listed] == [waiting]
    assert (await server.http.delete(f"/api/v1/runs/{failed}")).status_code == 404
    assert (await server.http.delete("/api/v1/runs/..%2Fetc")).status_code == 404


async def test_deleting_needs_the_admin_scope(server: Server) -> None:
    await server.register(FANOUT)
    run_id = await started(server, n=1, fail_at=0)
    await server.engine.client.watch(run_id, timeout=30)
    tokens = Tokens(server.runtime.store)
    made = {scope: await tokens.create(scope.name.lower(), scope) for scope in Scope}
    transport = httpx.ASGITransport(app=create_app(server.runtime, open_access=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        url = f"/api/v1/runs/{run_id}"
        assert (await http.delete(url)).status_code == 401
        for scope in (Scope.READ, Scope.RUN):
            bearer = {"Authorization": f"Bearer {made[scope]}"}
            assert (await http.delete(url, headers=bearer)).status_code == 403, scope
        assert (await http.get(url, headers=bearer)).status_code == 200
        admin = {"Authorization": f"Bearer {made[Scope.ADMIN]}"}
        assert (await http.delete(url, headers=admin)).status_code == 200
        assert (await http.get(url, headers=admin)).status_code == 404
