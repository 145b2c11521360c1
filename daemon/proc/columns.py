"""The per-process metric vector: W = 45 columns, the feature axis of ``proc_volume@1``.

Rates are per second over the interval since the previous sample (``*_per_s``; CPU columns are
the fraction of one core). A process seen for the first time after the sampler's first sample
counts its whole life in its first interval (it started within that interval, or was missed);
in the sampler's very first sample every rate is 0 (there is no previous sample).
Sizes are bytes. See docs/proc.md for the source of each column.
"""
from __future__ import annotations

COLUMNS: tuple[str, ...] = (
    # /proc/PID/stat utime, stime, cutime, cstime: fraction of one core
    "cpu_user", "cpu_system", "cpu_children_user", "cpu_children_system",
    # stat rss, vsize; status RssFile+RssShmem, VmSwap, VmData, VmExe, VmHWM
    "rss_bytes", "vms_bytes", "shared_bytes", "swap_bytes", "data_bytes", "text_bytes", "peak_rss_bytes",
    # stat num_threads
    "threads",
    # /proc/PID/fd, by what each link points to
    "fds_total", "fds_file", "fds_socket", "fds_pipe", "fds_anon_inode", "fds_other",
    # status voluntary_ctxt_switches, nonvoluntary_ctxt_switches
    "ctx_voluntary_per_s", "ctx_involuntary_per_s",
    # /proc/PID/io rchar, wchar, syscr, syscw, read_bytes, write_bytes
    "io_read_chars_per_s", "io_write_chars_per_s", "io_read_calls_per_s", "io_write_calls_per_s",
    "io_read_bytes_per_s", "io_write_bytes_per_s",
    # stat minflt, majflt
    "faults_minor_per_s", "faults_major_per_s",
    # the process's socket fds matched by inode in /proc/net/{tcp,tcp6,udp,udp6,unix}
    "tcp_established", "tcp_listen", "tcp_syn_sent", "tcp_other", "udp", "unix", "sockets_ipv6",
    "sockets_other",
    # processes in the same sample whose ppid is this process
    "children",
    # stat priority, nice
    "priority", "nice",
    # stat state: R; S or I; D; T, t, Z or X
    "state_running", "state_sleeping", "state_disk", "state_stopped_zombie",
    # /proc/uptime - stat starttime
    "age_s",
    # 1 for a process alive in this sample, 0 in padding rows and steps where it was not there
    "present",
)
W = len(COLUMNS)
INDEX = {c: i for i, c in enumerate(COLUMNS)}
assert W == 45
