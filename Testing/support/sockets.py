"""The listening TCP sockets of a process tree, read from /proc (Linux): which addresses a server really opened."""

import os
import socket
import struct
from pathlib import Path
from typing import Dict, List, Set, Tuple

Listening = Tuple[str, int, int]
"""(address, port, pid)."""

_LISTEN = "0A"


def process_tree(root: int) -> Set[int]:
    """``root`` and every process descended from it (as it is now)."""
    parents: Dict[int, List[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in tree:
            tree.add(pid)
            todo.extend(parents.get(pid, []))
    return tree


def listening_sockets(pids: Set[int]) -> List[Listening]:
    """Every TCP socket in LISTEN state that one of ``pids`` holds open: (address, port, pid)."""
    owners: Dict[str, int] = {}
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with_link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if with_link.startswith("socket:["):
                    owners[with_link[8:-1]] = pid
        except OSError:  # gone meanwhile
            continue
    found = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == _LISTEN and inode in owners:
                address, port = local.split(":")
                found.append((_address(address, family), int(port, 16), owners[inode]))
    return found


def _address(hex_address: str, family: int) -> str:
    """/proc/net's hex address (32-bit words in host byte order) as text."""
    raw = bytes.fromhex(hex_address)
    words = struct.unpack("<" + "I" * (len(raw) // 4), raw)
    return socket.inet_ntop(family, struct.pack(">" + "I" * len(words), *words))
