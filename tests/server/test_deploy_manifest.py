"""The Kubernetes manifest of the server probes what the server answers."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.server.conftest import Server

MANIFEST = Path(__file__).parents[2] / "deploy" / "kubernetes" / "server.yaml"


async def test_the_kubernetes_server_is_probed_where_it_answers_and_reached_by_its_service(
    server: Server,
) -> None:
    documents = list(yaml.safe_load_all(MANIFEST.read_text()))
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    service = next(d for d in documents if d["kind"] == "Service")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[0] == "server" and args[args.index("--host") + 1] == "0.0.0.0"
    port = int(args[args.index("--port") + 1])
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": port}
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    for probe in ("readinessProbe", "livenessProbe"):
        checked = container[probe]["httpGet"]
        assert checked["port"] == "http"
        assert (await server.http.get(checked["path"])).status_code == 200, probe
