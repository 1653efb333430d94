"""A running server as a stranger, a careless client and a restart see it: what listens where, what answers
without the token, which mistakes get which 4xx, and Serve's proxy 404 while the API is away.

Uses the session's one server (the ``ray_server`` fixture, Testing/support/serve.py): a few cheap requests each.
"""

import ipaddress
import stat
from pathlib import Path

import numpy as np
import pytest
import requests
import SimpleITK as sitk
from support.front import FrontServer
from support.phantoms import centre_ras, sphere_phantom
from support.serve import AUTHORIZED, TOKEN
from support.sockets import listening_sockets, process_tree

pytest.importorskip("ray.serve")

from SAMMed3DLib import InteractiveSession  # noqa: E402
from SAMMed3DLib.protocol import FRAME_TYPE, PROTOCOL, PROTOCOL_HEADER, STEP_HEADER, pack_frame  # noqa: E402
from SAMMed3DLib.remote import RemoteError, RemoteSession, ServerConnection, SessionLostError, _upload  # noqa: E402

HEADERS = {**AUTHORIZED, PROTOCOL_HEADER: str(PROTOCOL)}


@pytest.fixture(scope="module")
def phantom():
    image, truth = sphere_phantom()
    return image, centre_ras(truth)


def _on_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or bool(getattr(ip, "ipv4_mapped", None) and ip.ipv4_mapped.is_loopback)


# ---------------------------------------------------------------------------------------------- exposure
def test_every_port_of_a_loopback_server_listens_on_loopback_only(ray_server):
    """Ray's own processes too (GCS, raylet, object manager, agents, workers, Serve's replicas and proxy)."""
    sockets = listening_sockets(process_tree(ray_server.process.pid))
    port = int(ray_server.url.rsplit(":", 1)[1])
    assert any(found == port for _, found, _ in sockets) and len(sockets) > 5  # the HTTP port and Ray's own
    exposed = [(address, found, Path(f"/proc/{pid}/cmdline").read_bytes()[:80])
               for address, found, pid in sockets if not _on_loopback(address)]
    assert not exposed


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"])
def test_the_api_description_is_not_served(ray_server, path):
    for headers in ({}, AUTHORIZED):
        answer = requests.get(ray_server.url + path, headers=headers, timeout=10)
        assert answer.status_code == 404 and "openapi" not in answer.text.lower()


def test_health_without_the_token_shows_status_and_versions_only(ray_server):
    stranger = requests.get(ray_server.url + "/v1/health", timeout=10).json()
    assert set(stranger) == {"status", "version", "protocol"} and stranger["status"] == "ok"
    wrong = requests.get(ray_server.url + "/v1/health", headers={"Authorization": "Bearer " + "x" * 30}, timeout=10)
    assert set(wrong.json()) == set(stranger)
    team = requests.get(ray_server.url + "/v1/health", headers=AUTHORIZED, timeout=10).json()
    assert {"pid", "sessions", "weights", "threads"} <= set(team["workers"][0])


def test_rays_token_file_is_readable_by_its_owner_only(ray_server):
    assert stat.S_IMODE(ray_server.ray_token.stat().st_mode) == 0o600
    assert ray_server.ray_token.read_text() == "0123456789abcdef" * 4  # the same token, made private


# ---------------------------------------------------------------------------------------------- client mistakes
def _one_line_4xx(answer: requests.Response, status: int) -> str:
    assert answer.status_code == status, answer.text[:300]
    message = answer.json()["message"]
    assert "\n" not in message and "Traceback" not in message
    return message


def test_deeply_nested_step_json_gets_400(ray_server, phantom):
    nested = "[" * 5000
    with RemoteSession(ServerConnection(ray_server.url, TOKEN), phantom[0]) as remote:
        url = f"{ray_server.url}/v1/sessions/{remote.session_id}/click"
        in_header = requests.post(url, headers={**HEADERS, STEP_HEADER: nested}, timeout=30)
        assert "nested too deeply" in _one_line_4xx(in_header, 400)
        in_body = requests.post(url, data=nested, headers={**HEADERS, "Content-Type": "application/json"}, timeout=30)
        assert "nested too deeply" in _one_line_4xx(in_body, 400)
        beyond = '{"point": [1' + "0" * 400 + ", 0, 0]}"  # 10**400: beyond float range
        far = requests.post(url, headers={**HEADERS, STEP_HEADER: beyond}, timeout=30)
        assert "three coordinates" in _one_line_4xx(far, 400)
        assert remote.clicks == []


def test_a_session_id_with_a_non_ascii_digit_gets_404(ray_server):
    for method, path in (("POST", "/v1/sessions/w%C2%B2-x/click"), ("DELETE", "/v1/sessions/w%C2%B2-x")):
        answer = requests.request(method, ray_server.url + path, headers={**HEADERS, STEP_HEADER: "{}"}, timeout=10)
        assert "does not exist" in _one_line_4xx(answer, 404)


@pytest.mark.parametrize("change", [
    {"options": 5}, {"options": ["history_limit"]}, {"options": {"max_extend_steps": "abc"}},
    {"options": {"max_extend_steps": None}}, {"volume_size": [2**32, 2**32, 1]}, {"header": "[" * 5000},
])
def test_malformed_uploads_get_400(ray_server, phantom, change):
    image, _ = phantom
    frame = _upload(image, None, {})
    if "header" in change:
        text = change["header"].encode()
        frame = frame[:4] + len(text).to_bytes(4, "big") + text
    else:
        from SAMMed3DLib.protocol import unpack_frame

        header, body = unpack_frame(frame)
        if "options" in change:
            header["options"] = change["options"]
        else:  # no voxels: numpy's product of this size wraps around to 0
            header["volume"].update(size=change["volume_size"], length=0)
            body = b""
        frame = pack_frame(header, body)
    answer = requests.post(ray_server.url + "/v1/sessions", data=frame,
                           headers={**HEADERS, "Content-Type": FRAME_TYPE}, timeout=60)
    _one_line_4xx(answer, 400)


# ---------------------------------------------------------------------------------------------- restarts
def test_serves_proxy_404_is_retried_and_the_servers_own_is_not(ray_server, tiny_model, phantom):
    """While a server restarts, Serve's proxy answers 404 (plain text) before the API is back: the client waits
    for the API within its recovery time-out; a 404 of the server itself (JSON, naming the session) stands."""
    image, centre = phantom
    local = InteractiveSession(tiny_model, image)
    with FrontServer(ray_server.url) as front:
        connection = ServerConnection(front.url, TOKEN, recovery_timeout=60)
        with RemoteSession(connection, image) as remote:
            front.answer_404(3)
            result = remote.add_click(centre)
            assert front.answered_404 == 3 and not result.replayed
            assert np.array_equal(sitk.GetArrayViewFromImage(result.mask),
                                  sitk.GetArrayViewFromImage(local.add_click(centre).mask))
        with pytest.raises(SessionLostError, match="does not exist"):
            connection.request("POST", "/sessions/w0-0123abcd/undo", json={})
        front.answer_404(1000)
        with pytest.raises(RemoteError, match="is it a SAM-Med3D server"):  # never talked to one: no waiting
            ServerConnection(front.url, TOKEN, recovery_timeout=60).version()
        assert front.answered_404 == 4


def test_serves_proxy_404_beyond_the_recovery_time_says_so(ray_server):
    with FrontServer(ray_server.url) as front:
        connection = ServerConnection(front.url, TOKEN, recovery_timeout=1.0)
        connection.version()
        front.answer_404(1000)
        with pytest.raises(RemoteError, match="without a SAM-Med3D message") as caught:
            connection.models()
        assert caught.value.status == 404 and front.answered_404 >= 2
