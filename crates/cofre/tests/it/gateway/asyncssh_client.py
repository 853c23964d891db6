"""asyncssh (a strict SSH client) through the Cofre gateway: five commands and an SFTP session on
ONE connection, concurrently and then in sequence. Exits non-zero with the reason if any command's
output or exit status differs from what the target would give directly.

usage: asyncssh_client.py HOST PORT LOGIN KEY_FILE WORK_DIR
"""
import asyncio
import os
import sys

import asyncssh

HOST, PORT, LOGIN, KEY, WORK = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]


async def command(conn, tag, i):
    r = await conn.run(f"echo {tag}-{i}; echo err-{i} >&2; exit {i}", check=False)
    assert r.exit_status == i, f"{tag} {i}: exit status {r.exit_status} signal {r.exit_signal}"
    assert r.stdout == f"{tag}-{i}\n", f"{tag} {i}: stdout {r.stdout!r}"
    assert r.stderr == f"err-{i}\n", f"{tag} {i}: stderr {r.stderr!r}"


async def killed(conn, tag):
    r = await conn.run("echo before; kill -TERM $$", check=False)
    assert r.exit_signal is not None and r.exit_signal[0] == "TERM", f"{tag}: {r.exit_signal} {r.exit_status}"
    assert r.stdout == "before\n", f"{tag}: {r.stdout!r}"


async def sftp_round_trip(conn, tag):
    data = os.urandom(300_000)
    local = os.path.join(WORK, f"asyncssh-{tag}.bin")
    with open(local, "wb") as f:
        f.write(data)
    remote = f"/tmp/cofre-it-asyncssh-{os.getpid()}-{tag}.bin"
    async with conn.start_sftp_client() as sftp:
        await sftp.put(local, remote)
        await sftp.get(remote, local + ".back")
        await sftp.remove(remote)
    with open(local + ".back", "rb") as f:
        assert f.read() == data, f"{tag}: the file came back different"


async def main():
    async with asyncssh.connect(
        HOST, PORT, username=LOGIN, client_keys=[KEY], known_hosts=None, agent_path=None,
        login_timeout=30,
    ) as conn:
        await asyncio.gather(
            *[command(conn, "concurrent", i) for i in range(5)],
            killed(conn, "concurrent"),
            sftp_round_trip(conn, "concurrent"),
        )
        for i in range(5):
            await command(conn, "sequential", i)
        await killed(conn, "sequential")
        await sftp_round_trip(conn, "sequential")
    print("asyncssh: all commands and sftp sessions behaved")


asyncio.run(asyncio.wait_for(main(), 120))
