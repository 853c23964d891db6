"""paramiko through the Cofre gateway: five commands and an SFTP session on ONE connection,
concurrently (threads) and then in sequence, then an interactive shell with a pty that is resized.
Exits non-zero with the reason if anything differs from what the target would give directly.

usage: paramiko_client.py HOST PORT LOGIN KEY_FILE WORK_DIR
"""
import os
import sys
import threading
import time

import paramiko

HOST, PORT, LOGIN, KEY, WORK = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
DEADLINE = time.monotonic() + 120
failures = []


def check(ok, what):
    if not ok:
        failures.append(what)


def command(transport, tag, i):
    chan = transport.open_session(timeout=30)
    chan.settimeout(60)
    chan.exec_command(f"echo {tag}-{i}; exit {i}")
    out = chan.makefile("rb").read()
    status = chan.recv_exit_status()
    check(status == i, f"{tag} {i}: exit status {status}")
    check(out == f"{tag}-{i}\n".encode(), f"{tag} {i}: stdout {out!r}")
    chan.close()


def sftp_round_trip(client, tag):
    data = os.urandom(300_000)
    local = os.path.join(WORK, f"paramiko-{tag}.bin")
    with open(local, "wb") as f:
        f.write(data)
    remote = f"/tmp/cofre-it-paramiko-{os.getpid()}-{tag}.bin"
    sftp = client.open_sftp()
    sftp.put(local, remote)
    sftp.get(remote, local + ".back")
    sftp.remove(remote)
    sftp.close()
    with open(local + ".back", "rb") as f:
        check(f.read() == data, f"{tag}: the file came back different")


def guarded(f, *args):
    try:
        f(*args)
    except Exception as e:  # a thread's failure must fail the test, not vanish
        failures.append(f"{f.__name__}{args[1:]}: {e!r}")


def read_until(chan, needle, buf):
    while needle not in buf:
        if time.monotonic() > DEADLINE:
            raise TimeoutError(f"waiting for {needle!r}; got {buf!r}")
        data = chan.recv(65536)
        if not data:
            break
        buf += data
    return buf


def shell_with_resize(transport):
    chan = transport.open_session(timeout=30)
    chan.settimeout(60)
    chan.get_pty(term="xterm", width=100, height=30)
    chan.invoke_shell()
    chan.send(b"stty size; echo mark-$((1+1))\n")
    buf = read_until(chan, b"mark-2", b"")
    check(b"30 100" in buf, f"shell: first size, got {buf!r}")
    chan.resize_pty(width=120, height=40)
    chan.send(b"stty size; echo mark-$((2+2)); exit 7\n")
    buf = read_until(chan, b"mark-4", b"")
    check(b"40 120" in buf, f"shell: after resize, got {buf!r}")
    status = chan.recv_exit_status()
    check(status == 7, f"shell: exit status {status}")


def main():
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(HOST, port=PORT, username=LOGIN, key_filename=KEY, allow_agent=False,
                   look_for_keys=False, timeout=30, banner_timeout=30, auth_timeout=30)
    transport = client.get_transport()
    threads = [threading.Thread(target=guarded, args=(command, transport, "concurrent", i))
               for i in range(5)]
    threads.append(threading.Thread(target=guarded, args=(sftp_round_trip, client, "concurrent")))
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1, DEADLINE - time.monotonic()))
        check(not t.is_alive(), "a concurrent channel did not finish in time")
    for i in range(5):
        guarded(command, transport, "sequential", i)
    guarded(sftp_round_trip, client, "sequential")
    guarded(shell_with_resize, transport)
    client.close()
    if failures:
        print("\n".join(failures), file=sys.stderr)
        sys.exit(1)
    print("paramiko: all commands, sftp sessions and the shell behaved")


main()
