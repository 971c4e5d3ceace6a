"""Pure parsers of /proc files, statvfs, nvidia-smi CSV and Retry-After."""

import os

import pytest

from .conftest import FIXTURES


def read(name):
    return (FIXTURES / name).read_text()


# -- /proc/stat ------------------------------------------------------------------


def test_parse_stat_aggregate_line(oa):
    times = oa.parse_stat(read("proc/stat"))
    # user+nice+system+idle+iowait+irq+softirq+steal; guest fields not re-added
    assert times == oa.CpuTimes(idle=80000 + 1000, total=10000 + 500 + 3000 + 80000 + 1000 + 200)


def test_cpu_percent_between_snapshots(oa):
    prev, cur = oa.parse_stat(read("proc/stat")), oa.parse_stat(read("stat.second"))
    # total delta 1900 jiffies, idle+iowait delta 900 -> busy 1000/1900
    assert oa.cpu_percent(prev, cur) == 52.63


def test_cpu_percent_edge_cases(oa):
    a = oa.CpuTimes(idle=100, total=1000)
    assert oa.cpu_percent(None, a) is None
    assert oa.cpu_percent(a, None) is None
    assert oa.cpu_percent(a, a) is None  # no time elapsed
    assert oa.cpu_percent(a, oa.CpuTimes(idle=50, total=500)) is None  # counters reset
    assert oa.cpu_percent(a, oa.CpuTimes(idle=200, total=1100)) == 0.0  # all idle
    assert oa.cpu_percent(a, oa.CpuTimes(idle=100, total=1100)) == 100.0
    # iowait going backwards must not produce > 100
    assert oa.cpu_percent(a, oa.CpuTimes(idle=90, total=1100)) == 100.0


def test_parse_stat_old_kernel_four_fields(oa):
    assert oa.parse_stat(read("proc_old_kernel/stat")) == oa.CpuTimes(idle=850, total=1000)


@pytest.mark.parametrize("text", [
    "", "cpu0 1 2 3 4\n", "cpu  1 2 3\n", "cpu  1 x 3 4 5\n", "cpu  1 -2 3 4\n",
])
def test_parse_stat_malformed(oa, text):
    with pytest.raises(ValueError):
        oa.parse_stat(text)


# -- /proc/meminfo -----------------------------------------------------------------


def test_meminfo_uses_memavailable(oa):
    info = oa.parse_meminfo(read("proc/meminfo"))
    assert info["MemTotal"] == 16331780 and info["HugePages_Total"] == 0
    assert oa.memory_percent(info) == 26.52  # (16331780 - 12000000) / 16331780


def test_meminfo_fallback_without_memavailable(oa):
    info = oa.parse_meminfo(read("proc_old_kernel/meminfo"))
    assert "MemAvailable" not in info
    assert oa.memory_percent(info) == 60.0  # 1 - (200000 + 50000 + 150000) / 1000000


def test_meminfo_malformed(oa):
    info = oa.parse_meminfo(read("proc_malformed/meminfo"))
    assert info == {"MemFree": 8123456}  # bad lines skipped
    with pytest.raises(ValueError, match="MemTotal"):
        oa.memory_percent(info)
    with pytest.raises(ValueError):
        oa.memory_percent({"MemTotal": 100, "MemFree": 10})  # no MemAvailable, no Buffers/Cached


# -- /proc/loadavg, /proc/uptime ---------------------------------------------------------


def test_loadavg(oa):
    assert oa.parse_loadavg(read("proc/loadavg")) == [0.52, 0.58, 0.59]


@pytest.mark.parametrize("text", ["", "0.1 0.2\n", "a b c 1/2 3\n", "nan 1 1 1/1 1\n", "-1 0 0 1/1 1"])
def test_loadavg_malformed(oa, text):
    with pytest.raises(ValueError):
        oa.parse_loadavg(text)


def test_uptime(oa):
    assert oa.parse_uptime(read("proc/uptime")) == 350735.47
    for bad in ("", "\n", "abc 1", "inf 1"):
        with pytest.raises(ValueError):
            oa.parse_uptime(bad)


# -- /proc/net/dev -------------------------------------------------------------------


def test_net_dev_sums_all_but_lo(oa):
    assert oa.parse_net_dev(read("proc/net/dev")) == (335903688 + 1000, 1197331 + 2000)


def test_net_dev_no_space_after_colon_and_big_counters(oa):
    assert oa.parse_net_dev(read("proc_old_kernel/net/dev")) == (4294967296, 5)


def test_net_dev_malformed(oa):
    with pytest.raises(ValueError, match="eth0"):
        oa.parse_net_dev(read("proc_malformed/net/dev"))
    with pytest.raises(ValueError):
        oa.parse_net_dev("")  # no header at all
    with pytest.raises(ValueError):
        oa.parse_net_dev(read("proc/net/dev") + "what is this\n")


# -- disk ----------------------------------------------------------------------------


class FakeStatvfs:
    def __init__(self, blocks, bfree, bavail, frsize=4096):
        self.f_blocks, self.f_bfree, self.f_bavail, self.f_frsize = blocks, bfree, bavail, frsize


def test_disk_percent_like_df(oa):
    # 1000 blocks, 300 free of which 250 available to users: used 700 / (700 + 250)
    assert oa.disk_percent(FakeStatvfs(1000, 300, 250)) == 73.68
    assert oa.disk_percent(FakeStatvfs(1000, 1000, 1000)) == 0.0
    assert oa.disk_percent(FakeStatvfs(1000, 50, 0)) == 100.0
    with pytest.raises(ValueError):
        oa.disk_percent(FakeStatvfs(0, 0, 0))
    real = oa.disk_percent(os.statvfs("/"))
    assert 0.0 <= real <= 100.0


# -- nvidia-smi CSV --------------------------------------------------------------------


def test_nvidia_smi_two_gpus(oa):
    assert oa.parse_nvidia_smi_csv(read("nvidia-smi-2gpus.csv")) == [
        {"index": 0, "name": "NVIDIA A100-SXM4-40GB", "utilization_percent": 37.0,
         "memory_used_mib": 1024.0, "memory_total_mib": 40960.0, "temperature_c": 45.0,
         "power_draw_w": 95.12, "power_limit_w": 400.0},
        {"index": 1, "name": "NVIDIA A100-SXM4-40GB", "utilization_percent": None,
         "memory_used_mib": 0.0, "memory_total_mib": 40960.0, "temperature_c": None,
         "power_draw_w": None, "power_limit_w": None},
    ]


def test_nvidia_smi_odd_but_valid(oa):
    text = "\n0, Tesla T4, [Unknown Error], 3.456, 15360, 40, 27.999, 70.00\r\n\n" \
           "1, GeForce, Weird Name, 5, 1, 2, 3, nan, 250\n"
    gpus = oa.parse_nvidia_smi_csv(text)
    assert gpus[0]["utilization_percent"] is None
    assert gpus[0]["memory_used_mib"] == 3.46 and gpus[0]["power_draw_w"] == 28.0
    assert gpus[0]["power_limit_w"] == 70.0
    assert gpus[1]["name"] == "GeForce, Weird Name"  # comma inside the name
    assert gpus[1]["power_draw_w"] is None  # nan is not valid JSON
    assert oa.parse_nvidia_smi_csv("") == []


@pytest.mark.parametrize("text", [
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n",
    "index, name, utilization.gpu [%], memory.used [MiB], memory.total [MiB], temperature.gpu, power.draw [W], "
    "power.limit [W]\n",
    "0, A100, 1, 2\n",
    "0, A100, 1, 2, 3, 4, 5\n",  # the 7 columns of an agent before power.limit
    "\x00\xff garbage ,,,,,,, \n",
])
def test_nvidia_smi_garbage(oa, text):
    with pytest.raises(ValueError):
        oa.parse_nvidia_smi_csv(text)


# -- /proc/diskstats ---------------------------------------------------------------------


def test_diskstats_counts_whole_disks_once(oa):
    # nvme0n1 and sda (not their partitions, nor nvme0n10's namespace mistaken for a partition, nor
    # loop, dm-0 and sr0)
    read_bytes, written = oa.parse_diskstats(read("proc/diskstats"))
    assert read_bytes == (4196110 + 80 + 2000) * 512
    assert written == (9241344 + 16 + 4000) * 512


def test_diskstats_old_kernel_short_partition_lines(oa):
    assert oa.parse_diskstats(read("proc_old_kernel/diskstats")) == (9550688 * 512, 5922052 * 512)


@pytest.mark.parametrize("text", [read("proc_malformed/diskstats"), "8 0 sda\n"])
def test_diskstats_malformed(oa, text):
    with pytest.raises(ValueError):
        oa.parse_diskstats(text)


def test_diskstats_without_disks(oa):
    assert oa.parse_diskstats("") == (0, 0)
    assert oa.parse_diskstats("   7 0 loop0 1 0 8 0 0 0 0 0 0 0 0\n") == (0, 0)


def test_diskstats_of_this_machine(oa):
    read_bytes, written = oa.parse_diskstats(open("/proc/diskstats").read())
    assert read_bytes >= 0 and written >= 0


# -- SSH sessions --------------------------------------------------------------------------


@pytest.mark.parametrize("cmdline,session", [
    (b"sshd: alice@pts/0", True),
    (b"sshd: root@pts/3\x00\x00\x00\x00", True),  # sshd pads its title with NULs
    (b"sshd: bob@notty", True),  # a command, sftp, an editor's remote server: no terminal, still a session
    (b"sshd-session: carol@pts/1", True),  # OpenSSH 9.8 and later
    (b"sshd: alice [priv]", False),
    (b"sshd: unknown [preauth]", False),
    (b"sshd: dave [net]", False),
    (b"sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups", False),
    (b"/usr/sbin/sshd\x00-D\x00", False),
    (b"ssh\x00-p\x002222\x00root@127.0.0.10\x00", False),  # a client, not a session on this machine
    (b"/usr/bin/python3\x00sshd: fake@pts/9\x00", False),
    (b"", False),
])
def test_what_is_an_ssh_session(oa, cmdline, session):
    assert oa.is_ssh_session(cmdline) is session


def test_ssh_sessions_of_a_process_table(oa):
    table = str(FIXTURES / "proc_sessions")
    # alice (pts), bob (notty), carol (sshd-session) of the system sshd; root (pts/3) of local instance a;
    # root twice of local instance b
    assert oa.count_ssh_sessions(table) == 6
    assert oa.count_ssh_sessions(table, under_pid=700) == 1  # only instance a's sshd
    assert oa.count_ssh_sessions(table, under_pid=800) == 2
    assert oa.count_ssh_sessions(table, under_pid=500) == 3  # through the [priv] monitors
    assert oa.count_ssh_sessions(table, under_pid=4242) == 0


# -- misc ------------------------------------------------------------------------------


def test_parse_retry_after(oa):
    assert oa.parse_retry_after("7") == 7.0
    assert oa.parse_retry_after(" 2.5 ") == 2.5
    assert oa.parse_retry_after("-3") == 0.0
    assert oa.parse_retry_after(None) is None
    assert oa.parse_retry_after("soon") is None
    assert oa.parse_retry_after("") is None
    now = 1794531600.0  # 2026-11-13T01:00:00Z
    assert oa.parse_retry_after("Fri, 13 Nov 2026 01:00:30 GMT", now=now) == 30.0
    assert oa.parse_retry_after("Fri, 13 Nov 2026 00:59:00 GMT", now=now) == 0.0


def test_format_timestamp(oa):
    assert oa.format_timestamp(1794531600.9) == "2026-11-13T01:00:00Z"
