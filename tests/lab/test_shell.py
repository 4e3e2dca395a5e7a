"""The lab's node shell: a bash-on-a-PTY look-alike that runs nothing on the host."""

from __future__ import annotations

import asyncio
import re

import pytest

from pxproxy.lab.journal import Journal, JournalTicker, format_line
from pxproxy.lab.shell import ExecRecord, GuestView, NodeShell, SimpleShellHost

PROMPT = b"\x1b[01;32mroot@pve1\x1b[00m:\x1b[01;34m~\x1b[00m# "
ANSI = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]")


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


class Term:
    """Reads a shell's output with deadlines; `buf` keeps everything unread so far."""

    def __init__(self, shell: NodeShell) -> None:
        self.shell = shell
        self.buf = b""

    async def until(self, needle: bytes, within: float = 5.0) -> bytes:
        """Output up to and including `needle` (consumed)."""
        async with asyncio.timeout(within):
            while needle not in self.buf:
                chunk = await self.shell.read()
                if not chunk:
                    raise AssertionError(f"closed before {needle!r}; got {self.buf!r}")
                self.buf += chunk
        head, _, self.buf = self.buf.partition(needle)
        return head + needle

    async def run(self, line: str) -> str:
        """Type a line; the command's output (echo stripped, CRLF kept) up to the next prompt."""
        self.shell.feed(line.encode() + b"\r")
        await self.until(b"\x1b[?2004l\r")
        out = await self.until(PROMPT)
        return out[: -len(PROMPT)].removesuffix(b"\x1b[?2004h").decode()


@pytest.fixture
def host() -> SimpleShellHost:
    clock = Clock()
    return SimpleShellHost(
        "pve1",
        guests={
            101: GuestView(101, "web", "lxc", True, "pve1"),
            102: GuestView(102, "db", "lxc", False, "pve1"),
            103: GuestView(103, "far", "lxc", True, "pve2"),
            200: GuestView(200, "vm", "qemu", True, "pve1"),
        },
        journals={
            "node": Journal("pve1", seed=1, history=20, clock=clock),
            "guest:101": Journal("web", seed=2, profile="guest", history=20, clock=clock),
        },
    )


@pytest.fixture
async def term(host: SimpleShellHost) -> Term:
    t = Term(NodeShell(host, root=True))
    await t.until(PROMPT)
    return t


def argvs(shell: NodeShell) -> list[tuple[str, ...]]:
    return [r.argv for r in shell.history]


async def test_motd_then_coloured_prompt(host: SimpleShellHost) -> None:
    t = Term(NodeShell(host, root=True))
    motd = await t.until(PROMPT)
    assert motd.startswith(b"Linux pve1 6.")
    assert b"Debian GNU/Linux comes with ABSOLUTELY NO WARRANTY" in motd
    assert b"\r\n" in motd
    assert b"\n" not in motd.replace(b"\r\n", b"")  # every LF is a CRLF
    assert motd.endswith(b"\x1b[?2004h" + PROMPT)


async def test_echo_and_crlf(term: Term) -> None:
    term.shell.feed(b"echo hi")
    assert await term.until(b"echo hi") == b"echo hi"
    term.shell.feed(b"\r")
    out = await term.until(PROMPT)
    assert out == b"\r\n\x1b[?2004l\rhi\r\n\x1b[?2004h" + PROMPT


async def test_echo_survives_split_utf8_and_split_escape_sequences(term: Term) -> None:
    # A pasted CR is text, not Enter: the line runs only on the CR typed after the paste.
    data = "echo h€llo".encode() + b"\x1b[D" + b"\x1b[200~ 'p\rq'\x1b[201~\r"
    for i in range(len(data)):  # one byte per feed: splits inside € and inside every ESC[...
        term.shell.feed(data[i : i + 1])
    echo = await term.until(b"\x1b[?2004l\r")
    assert "echo h€llo 'p\r\nq'".encode() in echo
    assert b"\x1b[D" not in echo
    assert b"200~" not in echo
    out = await term.until(PROMPT)
    assert out.startswith("h€llo p\r\nq\r\n".encode())
    assert term.shell.history[-1].argv == ("echo", "h€llo", "p\nq")


async def test_backspace_edits_the_line(term: Term) -> None:
    term.shell.feed(b"echo abX\x7fc\r")
    echo = await term.until(b"\x1b[?2004l\r")
    assert b"X\b \bc" in echo
    assert (await term.until(PROMPT)).startswith(b"abc\r\n")


async def test_line_wraps_at_resize_width(term: Term) -> None:
    term.shell.resize(20, 10)
    visible_prompt = len("root@pve1:~# ")  # 13 columns
    term.shell.feed(b"echo 123456789")  # 13 + 14 = 27 > 20
    echo = await term.until(b"789")
    assert echo == b"echo 12" + b" \r" + b"3456789"
    assert 13 + len("echo 12") == 20 == visible_prompt + 7
    term.shell.feed(b"\r")
    assert (await term.until(PROMPT)).startswith(b"\r\n\x1b[?2004l\r123456789\r\n")


async def test_quoting_and_operators(term: Term) -> None:
    assert await term.run("""echo 'a  b' "c $HOME" d\\ e""") == "a  b c /root d e\r\n"
    assert await term.run("echo one; echo two") == "one\r\ntwo\r\n"
    assert await term.run("false && echo no || echo yes") == "yes\r\n"
    assert await term.run("true && echo ok") == "ok\r\n"
    assert await term.run("false; echo $?") == "1\r\n"
    assert await term.run("echo $?") == "0\r\n"
    assert await term.run("""echo "it's" 'say "hi"'""") == 'it\'s say "hi"\r\n'
    assert await term.run("echo a;;") == "-bash: syntax error near unexpected token `;;'\r\n"
    assert term.shell.last_status == 2


async def test_printf_and_echo_flags(term: Term) -> None:
    assert await term.run(r"printf '%s|%s\n' a b c") == "a|b\r\nc|\r\n"
    assert await term.run(r"printf 'x%dy\t%%\n' 42") == "x42y\t%\r\n"
    assert await term.run(r"echo -n ab; echo -e 'c\td'") == "abc\td\r\n"
    assert await term.run(r"echo 'a\nb'") == "a\\nb\r\n"


async def test_sh_c_is_interpreted_recursively(term: Term) -> None:
    assert await term.run("sh -c 'echo $0:$1; false' me arg; echo $?") == "me:arg\r\n1\r\n"
    assert await term.run("""sh -c 'sh -c "exit 7"'; echo $?""") == "7\r\n"
    assert ("sh", "-c", "exit 7") in argvs(term.shell)


async def test_marker_style_command_line(term: Term) -> None:
    # What issue 5's client types: markers split so the echo never contains them whole.
    line = (
        "printf '%s%s\\n' __PX 'S_1'; pct exec 101 -- cat /etc/hostname; "
        "printf '%s%s:%d\\n' __PX E_1 \"$?\""
    )
    assert await term.run(line) == "__PXS_1\r\nweb\r\n__PXE_1:0\r\n"


async def test_pct_exec_running_stopped_unknown(term: Term) -> None:
    assert await term.run("pct exec 101 -- cat /etc/hostname") == "web\r\n"
    out = await term.run("pct exec 101 -- uname -a")
    assert out.startswith("Linux web 6.")
    assert out.endswith("GNU/Linux\r\n")
    assert "/dev/mapper/pve-vm--101--disk--0" in await term.run("pct exec 101 -- df -h")
    assert await term.run("pct exec 101 -- false; echo $?") == "1\r\n"
    assert await term.run("pct exec 102 -- hostname; echo $?") == "CT 102 not running\r\n255\r\n"
    missing = "Configuration file 'nodes/pve1/lxc/{}.conf' does not exist\r\n2\r\n"
    assert await term.run("pct exec 999 -- hostname; echo $?") == missing.format(999)
    assert await term.run("pct exec 103 -- hostname; echo $?") == missing.format(103)  # other node
    assert await term.run("pct exec 200 -- hostname; echo $?") == missing.format(200)  # qemu
    scopes = [(r.scope, r.argv) for r in term.shell.history if r.scope != "node"]
    assert scopes == [
        ("guest:101", ("cat", "/etc/hostname")),
        ("guest:101", ("uname", "-a")),
        ("guest:101", ("df", "-h")),
        ("guest:101", ("false",)),
    ]


async def test_unknown_command(term: Term) -> None:
    assert (
        await term.run("frobnicate x; echo $?") == "-bash: frobnicate: command not found\r\n127\r\n"
    )


async def test_journalctl_lines_and_units(term: Term, host: SimpleShellHost) -> None:
    out = await term.run("journalctl -n 5 --no-pager")
    lines = out.split("\r\n")[:-1]
    assert len(lines) == 5
    assert all(" pve1 " in line for line in lines)
    out = await term.run("pct exec 101 -- journalctl -u nginx -u ssh -n 50 --no-pager")
    lines = out.split("\r\n")[:-1]
    assert lines
    assert all(re.search(r" web (nginx|sshd)\[\d+\]: ", line) for line in lines)
    journal = host.journals["guest:101"]
    assert len(lines) == len(journal.entries(services=["nginx", "ssh"]))
    cursor = journal.entries()[-3].cursor
    out = await term.run(f"pct exec 101 -- journalctl --after-cursor '{cursor}' -o cat")
    assert out.split("\r\n")[:-1] == [e.message for e in journal.entries()[-2:]]
    assert await term.run("journalctl --after-cursor bogus; echo $?") == (
        "Failed to seek to cursor: Invalid argument\r\n1\r\n"
    )


async def test_journalctl_follow_streams_then_ctrl_c(term: Term, host: SimpleShellHost) -> None:
    journal = host.journals["guest:101"]
    term.shell.feed(b"pct exec 101 -- journalctl -f -n 2 -u nginx\r")
    await term.until(b"\x1b[?2004l\r")
    first = await term.until(b"\r\n")
    await term.until(b"\r\n")
    assert b" web nginx[" in first
    assert term.shell.busy
    journal.append("nginx", "brand new line", unit="nginx.service", pid=77)
    journal.append("sshd", "filtered out", unit="ssh.service", pid=78)
    journal.append("nginx", "second new line", unit="nginx.service", pid=77)
    assert (await term.until(b"brand new line\r\n")).endswith(b"web nginx[77]: brand new line\r\n")
    got = await term.until(b"second new line\r\n")
    assert b"filtered out" not in got
    term.shell.feed(b"\x03")
    assert await term.until(PROMPT) == b"^C\r\n\x1b[?2004h" + PROMPT
    assert not term.shell.busy
    assert await term.run("echo $?") == "130\r\n"


async def test_node_journalctl_follow_sees_ticker_lines(term: Term, host: SimpleShellHost) -> None:
    ticker = JournalTicker(host.journals["node"], interval=0.01)
    term.shell.feed(b"journalctl -f -n 1\r")
    await term.until(b"\x1b[?2004l\r")
    before = await term.until(b"\r\n")  # the last old line: now it is following
    ticker.start()
    try:
        fresh = [await term.until(b"\r\n") for _ in range(3)]
    finally:
        await ticker.stop()
    entries = host.journals["node"].entries()
    shown = [format_line(e) + "\r\n" for e in entries]
    # The follow continues right after the old line, in journal order, with the ticker's lines.
    k = shown.index(before.decode())
    assert [line.decode() for line in fresh] == shown[k + 1 : k + 4]
    assert entries[k].seq == 20  # the fixture's history: the ticker wrote everything after it
    term.shell.feed(b"\x03")
    await term.until(PROMPT)


async def test_tail_files_and_missing_file(term: Term, host: SimpleShellHost) -> None:
    out = await term.run("pct exec 101 -- tail -n 2 -- /var/log/nginx/access.log")
    lines = out.split("\r\n")[:-1]
    assert len(lines) == 2
    assert all(re.match(r'^[\d.]+ - - \[\d{2}/\w{3}/\d{4}:[\d:]+ \+0000\] "GET ', x) for x in lines)
    assert await term.run("pct exec 101 -- tail -F -n 1 /var/log/nope; echo $?") == (
        "tail: cannot open '/var/log/nope' for reading: No such file or directory\r\n"
        "tail: no files remaining\r\n1\r\n"
    )
    term.shell.feed(b"pct exec 101 -- tail -F -n 1 /var/log/syslog\r")
    await term.until(b"\x1b[?2004l\r")
    await term.until(b"\r\n")  # the last old line: now it is following
    host.journals["guest:101"].append("cron", "tick", unit="cron.service", pid=5)
    assert (await term.until(b"tick\r\n")).endswith(b" web cron[5]: tick\r\n")
    term.shell.feed(b"\x03")
    await term.until(PROMPT)


async def test_sleep_is_interruptible(term: Term) -> None:
    term.shell.feed(b"sleep 3600; echo after\r")
    await term.until(b"\x1b[?2004l\r")
    assert term.shell.busy
    term.shell.feed(b"\x03")
    out = await term.until(PROMPT)
    assert out == b"^C\r\n\x1b[?2004h" + PROMPT
    assert ("echo", "after") not in argvs(term.shell)


async def test_quoted_injection_stays_a_literal_argument(term: Term) -> None:
    recorder: list[ExecRecord] = []
    t = Term(NodeShell(term.shell.host, root=True, recorder=recorder))
    await t.until(PROMPT)
    out = await t.run("echo '; rm -rf /' \"\\$(reboot)\" '`id`' && pct exec 101 -- echo '&& halt'")
    assert out == "; rm -rf / $(reboot) `id`\r\n&& halt\r\n"
    assert [r.argv for r in recorder] == [
        ("echo", "; rm -rf /", "$(reboot)", "`id`"),
        ("pct", "exec", "101", "--", "echo", "&& halt"),
        ("echo", "&& halt"),
    ]
    assert not any(r.argv[0] in {"rm", "reboot", "id", "halt"} for r in recorder)
    # Unquoted, the same text does run: the record is what proves the difference.
    await t.run("echo x; rm -rf /")
    assert ("rm", "-rf", "/") in [r.argv for r in recorder]


async def test_unterminated_quote_gets_a_continuation_prompt(term: Term) -> None:
    term.shell.feed(b"echo 'a\r")
    assert (await term.until(b"> ")).endswith(b"\x1b[?2004h> ")
    assert await term.run("b'") == "a\r\nb\r\n"


async def test_exit_closes_with_status(term: Term) -> None:
    term.shell.feed(b"exit 3\r")
    assert (await term.until(b"logout\r\n")).endswith(b"\x1b[?2004l\rlogout\r\n")
    async with asyncio.timeout(5):
        assert await term.shell.read() == b""
    assert term.shell.closed
    assert term.shell.last_status == 3


async def test_close_cancels_running_command(term: Term) -> None:
    term.shell.feed(b"journalctl -f\r")
    await term.until(b"\x1b[?2004l\r")
    await term.until(b"\r\n")  # it runs: the first old line is out
    assert term.shell.busy
    await term.shell.close()
    assert term.shell.closed
    assert not term.shell.busy
    term.shell.feed(b"echo ignored\r")
    assert term.shell.history[-1].argv == ("journalctl", "-f")


async def test_non_root_gets_login_prompt_and_never_a_shell(host: SimpleShellHost) -> None:
    shell = NodeShell(host, root=False)
    t = Term(shell)
    assert await t.until(b"pve1 login: ") == b"pve1 login: "
    shell.feed(b"root\r")
    assert await t.until(b"Password: ") == b"root\r\nPassword: "
    shell.feed(b"hunter2; echo pwned\r")
    out = await t.until(b"pve1 login: ")
    assert b"Login incorrect" in out
    assert b"hunter2" not in out  # passwords are not echoed
    shell.feed(b"echo hi\r")
    await t.until(b"Password: ")
    assert shell.history == []
    assert shell.lines == []
