"""
A minidump summary for the crash page: crash reason and address, OS and
CPU, the module list and the crashing thread's top frames as module +
offset, read with the ``minidump`` library from PyPI (pure Python).

``summarize(data)`` takes the dump's bytes and returns a frozen
``MinidumpSummary``; ``summary.to_json()`` is the same as plain JSON values
(addresses and offsets as ``0x…`` strings: 64-bit values do not fit a
JavaScript number).

Frames: frame 0 is the instruction pointer of the exception's CPU context
(trust ``"context"``). The frames after it come from a stack scan (trust
``"scan"``): every pointer-sized word of the crashing thread's saved stack,
from the context's stack pointer up, that falls inside a loaded module. This
is Breakpad's fallback stack walk without unwind information; like the
frames Breakpad's stackwalker marks "found by stack scanning", they may
include false positives (stale return addresses, function pointers held in
locals). No symbols are needed or read.

Hostile input: any bytes give a summary; what could not be read is named in
its ``error`` field (the first problem; the parts read before it stay).
Only a non-bytes argument raises (``TypeError``). Time and memory are
bounded by ``Limits``: the dump size, the streams, modules and threads
looked at, the stack bytes scanned and the frames kept; a dump's counts
are checked against its stream sizes before the library reads a record.

CPU-heavy (pure Python; ``bench/minidump_micro.py``: under 1 ms of CPU for
each dump of tests/data, about 18 ms for a dump that reaches every bound of
the default ``Limits``): call it off the reactor thread, e.g.
``deferToThreadPool(reactor, pool, summarize, data)``. It holds no state
between calls, so threads may share it.
"""

from __future__ import annotations

import bisect
import io
import struct
from collections.abc import Callable, Sequence
from typing import Any

import attr
from minidump.directory import MINIDUMP_DIRECTORY
from minidump.header import MinidumpHeader
from minidump.streams.ContextStream import CONTEXT, WOW64_CONTEXT
from minidump.streams.ExceptionStream import MINIDUMP_EXCEPTION_STREAM, ExceptionCode
from minidump.streams.ModuleListStream import MINIDUMP_MODULE
from minidump.streams.SystemInfoStream import MINIDUMP_SYSTEM_INFO
from minidump.streams.ThreadListStream import MINIDUMP_THREAD

# Stream types (MINIDUMP_STREAM_TYPE) and record sizes from the format.
THREAD_LIST, MODULE_LIST, EXCEPTION, SYSTEM_INFO = 3, 4, 6, 7
HEADER_SIZE, DIRECTORY_SIZE, MODULE_SIZE, THREAD_SIZE = 32, 12, 108, 48
SYSTEM_INFO_SIZE, EXCEPTION_STREAM_SIZE = 56, 168
AMD64_CONTEXT_SIZE, X86_CONTEXT_SIZE, ARM64_CONTEXT_SIZE = 1232, 716, 912
VS_FFI_SIGNATURE = 0xFEEF04BD

PLATFORMS = {
    0: "Windows 3.1", 1: "Windows 9x", 2: "Windows NT", 0x8000: "Unix", 0x8101: "macOS",
    0x8102: "iOS", 0x8201: "Linux", 0x8202: "Solaris", 0x8203: "Android", 0x8204: "PS3",
    0x8205: "NaCl", 0x8206: "Fuchsia",
}
ARCHES = {
    0: "x86", 5: "arm", 6: "ia64", 9: "amd64", 12: "arm64", 0x8003: "arm64", 0x8001: "sparc",
    0x8002: "ppc64", 0x8004: "mips64", 0x8005: "riscv64", 2: "mips", 3: "ppc",
}
LINUX_SIGNALS = {
    1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT",
    7: "SIGBUS", 8: "SIGFPE", 9: "SIGKILL", 10: "SIGUSR1", 11: "SIGSEGV", 12: "SIGUSR2",
    13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM", 16: "SIGSTKFLT", 17: "SIGCHLD",
    18: "SIGCONT", 19: "SIGSTOP", 20: "SIGTSTP", 21: "SIGTTIN", 22: "SIGTTOU", 23: "SIGURG",
    24: "SIGXCPU", 25: "SIGXFSZ", 26: "SIGVTALRM", 27: "SIGPROF", 28: "SIGWINCH", 29: "SIGIO",
    30: "SIGPWR", 31: "SIGSYS",
}
# si_code of the signals that carry a fault address.
LINUX_SI_CODES = {
    "SIGSEGV": {1: "SEGV_MAPERR", 2: "SEGV_ACCERR"},
    "SIGBUS": {1: "BUS_ADRALN", 2: "BUS_ADRERR", 3: "BUS_OBJERR"},
    "SIGFPE": {1: "FPE_INTDIV", 2: "FPE_INTOVF", 3: "FPE_FLTDIV"},
    "SIGILL": {1: "ILL_ILLOPC", 2: "ILL_ILLOPN", 3: "ILL_ILLADR", 4: "ILL_ILLTRP"},
}
MAC_SIGNALS = {
    1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT",
    7: "SIGEMT", 8: "SIGFPE", 9: "SIGKILL", 10: "SIGBUS", 11: "SIGSEGV", 12: "SIGSYS",
    13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM",
}
MACH_EXCEPTIONS = {
    1: "EXC_BAD_ACCESS", 2: "EXC_BAD_INSTRUCTION", 3: "EXC_ARITHMETIC", 4: "EXC_EMULATION",
    5: "EXC_SOFTWARE", 6: "EXC_BREAKPOINT", 7: "EXC_SYSCALL", 8: "EXC_MACH_SYSCALL",
    9: "EXC_RPC_ALERT", 10: "EXC_CRASH", 11: "EXC_RESOURCE", 12: "EXC_GUARD",
    13: "EXC_CORPSE_NOTIFY", 0x43507378: "SIMULATED",
}
MACH_KERN_CODES = {1: "KERN_INVALID_ADDRESS", 2: "KERN_PROTECTION_FAILURE"}
Bytes = bytes | bytearray | memoryview
DUMP_REQUESTED = 0xFFFFFFFF  # Breakpad's code for a dump taken without a crash


@attr.s(frozen=True, slots=True)
class Limits:
    """What one summary may cost: the bounds on the work ``summarize`` does."""

    max_dump_bytes: int = attr.ib(default=64 * 1024 * 1024)
    max_streams: int = attr.ib(default=256)
    max_modules: int = attr.ib(default=1000)
    max_threads: int = attr.ib(default=4096)
    max_stack_bytes: int = attr.ib(default=64 * 1024)
    max_frames: int = attr.ib(default=40)
    max_name_chars: int = attr.ib(default=1024)


@attr.s(frozen=True, slots=True)
class Module:
    """A loaded module: its path as recorded, base address, size, file version (or None)."""

    name: str = attr.ib()
    base: int = attr.ib()
    size: int = attr.ib()
    version: str | None = attr.ib(default=None)

    def to_json(self) -> dict[str, Any]:
        """The module as JSON values."""
        return {"name": self.name, "base": hex(self.base), "size": self.size,
                "version": self.version}


@attr.s(frozen=True, slots=True)
class Frame:
    """
    One frame of the crashing thread: the address, the module holding it
    (its base name, None outside every module) and the offset from that
    module's base; trust ``"context"`` (frame 0) or ``"scan"`` (may be a
    false positive, see the module docstring).
    """

    index: int = attr.ib()
    address: int = attr.ib()
    module: str | None = attr.ib()
    offset: int | None = attr.ib()
    trust: str = attr.ib()

    def to_json(self) -> dict[str, Any]:
        """The frame as JSON values."""
        return {"index": self.index, "address": hex(self.address), "module": self.module,
                "offset": None if self.offset is None else hex(self.offset),
                "trust": self.trust}


@attr.s(frozen=True, slots=True)
class MinidumpSummary:
    """
    What the crash page shows of a minidump. Every field may be empty (None
    or ()) when the dump lacks it or could not be read; ``error`` names the
    first problem met, None for a dump read whole. ``modules_truncated`` and
    ``frames_truncated`` say a ``Limits`` bound cut the list.
    """

    error: str | None = attr.ib(default=None)
    crash_reason: str | None = attr.ib(default=None)
    crash_address: int | None = attr.ib(default=None)
    crashing_thread: int | None = attr.ib(default=None)
    os: str | None = attr.ib(default=None)
    os_version: str | None = attr.ib(default=None)
    cpu_arch: str | None = attr.ib(default=None)
    cpu_count: int | None = attr.ib(default=None)
    modules: tuple[Module, ...] = attr.ib(default=())
    modules_truncated: bool = attr.ib(default=False)
    frames: tuple[Frame, ...] = attr.ib(default=())
    frames_truncated: bool = attr.ib(default=False)

    def to_json(self) -> dict[str, Any]:
        """The summary as JSON values (a dict for ``json.dumps``)."""
        return {
            "error": self.error,
            "crash_reason": self.crash_reason,
            "crash_address": None if self.crash_address is None else hex(self.crash_address),
            "crashing_thread": self.crashing_thread,
            "os": self.os,
            "os_version": self.os_version,
            "cpu_arch": self.cpu_arch,
            "cpu_count": self.cpu_count,
            "modules": [m.to_json() for m in self.modules],
            "modules_truncated": self.modules_truncated,
            "frames": [f.to_json() for f in self.frames],
            "frames_truncated": self.frames_truncated,
        }


class _Unreadable(Exception):
    """A part of the dump that cannot be read; its message goes to ``error``."""


def summarize(data: Bytes, limits: Limits | None = None) -> MinidumpSummary:
    """
    Summarize a minidump's bytes. Never raises for any bytes (problems go
    to the summary's ``error``); raises ``TypeError`` for anything else.
    CPU-bound: call it in a thread pool, not on the reactor thread.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"a minidump is bytes, not {type(data).__name__}")
    reader = _Reader(bytes(data), limits or Limits())
    reader.read()
    return MinidumpSummary(**reader.fields)


class _Reader:
    """One summary's work: the dump's bytes and the fields found so far."""

    def __init__(self, data: bytes, limits: Limits) -> None:
        self.data = data
        self.limits = limits
        self.buf = io.BytesIO(data)
        self.fields: dict[str, Any] = {}
        self.streams: dict[int, tuple[int, int]] = {}  # first of each type: (rva, size)
        self.platform: int | None = None
        self.arch: int | None = None
        self.exception: Any = None  # the library's MINIDUMP_EXCEPTION_STREAM
        self.modules: list[Module] = []

    def read(self) -> None:
        """Each part on its own: a part that fails leaves the others; the first error is kept."""
        self.attempt(self.read_header)
        if not self.streams:
            self.fields.setdefault("error", "no system info, exception, module or thread stream")
            return
        self.attempt(self.read_system_info)
        self.attempt(self.read_exception)
        self.attempt(self.read_modules)
        self.attempt(self.read_frames)

    def attempt(self, part: Callable[[], None]) -> None:
        try:
            part()
        except _Unreadable as e:
            self.fields.setdefault("error", str(e))
        except Exception as e:  # the library's own checks on hostile bytes (ValueError, …)
            self.fields.setdefault("error", f"unreadable minidump: {type(e).__name__}: {e}"[:300])

    def read_header(self) -> None:
        if len(self.data) > self.limits.max_dump_bytes:
            raise _Unreadable(f"dump of {len(self.data)} bytes is over the "
                              f"{self.limits.max_dump_bytes} bytes summarized")
        if len(self.data) < HEADER_SIZE or self.data[:4] != b"MDMP":
            raise _Unreadable("not a minidump (no MDMP header)")
        header = MinidumpHeader.parse(self.buf)
        self.read_directory(header.NumberOfStreams, header.StreamDirectoryRva)

    def stream(self, kind: int, min_size: int) -> tuple[int, int] | None:
        """The (rva, size) of a stream, checked to lie in the file; None if absent."""
        if kind not in self.streams:
            return None
        rva, size = self.streams[kind]
        if size < min_size or rva + size > len(self.data):
            raise _Unreadable(f"stream {kind} out of the file or too short "
                              f"(rva {rva}, size {size})")
        return rva, size

    def read_directory(self, count: int, rva: int) -> None:
        if rva + count * DIRECTORY_SIZE > len(self.data):
            raise _Unreadable(f"stream directory of {count} entries at {rva} "
                              "runs past the end of the file")
        for i in range(min(count, self.limits.max_streams)):
            kind, size, at = struct.unpack_from("<III", self.data, rva + i * DIRECTORY_SIZE)
            if at + size > len(self.data):
                # Noted, and the streams in the file are still read.
                self.fields.setdefault("error", f"stream {i} (type {kind:#x}) runs past the "
                                       "end of the file: truncated or corrupt")
                continue
            if kind in (THREAD_LIST, MODULE_LIST, EXCEPTION, SYSTEM_INFO):
                self.buf.seek(rva + i * DIRECTORY_SIZE)
                entry = MINIDUMP_DIRECTORY.parse(self.buf)
                self.streams.setdefault(kind, (entry.Location.Rva, entry.Location.DataSize))

    def read_system_info(self) -> None:
        where = self.stream(SYSTEM_INFO, SYSTEM_INFO_SIZE)
        if where is None:
            return
        # The arch and platform as raw numbers first: the library's enums
        # refuse values they do not know (riscv64, Fuchsia, …).
        arch, _, _, ncpu, _, major, minor, build, platform = struct.unpack_from(
            "<HHHBBIIII", self.data, where[0])
        self.arch, self.platform = arch, platform
        self.fields.update(
            os=PLATFORMS.get(platform, f"platform {platform:#x}"),
            cpu_arch=ARCHES.get(arch, f"arch {arch:#x}"),
            cpu_count=ncpu,
        )
        version = f"{major}.{minor}.{build}"
        try:
            self.buf.seek(where[0])
            info = MINIDUMP_SYSTEM_INFO.parse(self.buf)
            csd = self.string(info.CSDVersionRva)
        except ValueError:
            csd = None
        self.fields["os_version"] = f"{version} {csd}" if csd else version

    def string(self, rva: int) -> str | None:
        """
        A MINIDUMP_STRING (UTF-16), at most the name limit read: decoded here,
        as the library's reader would decode the whole declared length.
        """
        if rva == 0 or rva + 4 > len(self.data):
            return None
        length = int.from_bytes(self.data[rva:rva + 4], "little")
        end = rva + 4 + min(length, 2 * self.limits.max_name_chars)
        if end > len(self.data):
            return None
        return self.data[rva + 4:end].decode("utf-16-le", "replace")

    def read_modules(self) -> None:
        where = self.stream(MODULE_LIST, 4)
        if where is None:
            return
        rva, size = where
        count = int.from_bytes(self.data[rva:rva + 4], "little")
        if 4 + count * MODULE_SIZE > size:
            raise _Unreadable(f"module list of {count} modules is larger than its stream")
        modules = []
        for i in range(min(count, self.limits.max_modules)):
            self.buf.seek(rva + 4 + i * MODULE_SIZE)
            raw = MINIDUMP_MODULE.parse(self.buf)
            modules.append(Module(
                name=self.string(raw.ModuleNameRva) or "",
                base=raw.BaseOfImage,
                size=raw.SizeOfImage,
                version=_file_version(raw.VersionInfo),
            ))
        self.modules = modules
        self.fields["modules"] = tuple(modules)
        self.fields["modules_truncated"] = count > len(modules)

    def read_exception(self) -> None:
        where = self.stream(EXCEPTION, EXCEPTION_STREAM_SIZE)
        if where is None:
            return
        self.buf.seek(where[0])
        exception = MINIDUMP_EXCEPTION_STREAM.parse(self.buf)
        record = exception.ExceptionRecord
        self.fields.update(
            crash_reason=self.reason(record.ExceptionCode_raw, record.ExceptionFlags,
                                     record.ExceptionInformation),
            crash_address=record.ExceptionAddress,
            crashing_thread=exception.ThreadId,
        )
        self.exception = exception

    def reason(self, code: int, flags: int, info: Sequence[int]) -> str:
        """The exception code's name by the platform's conventions (rust-minidump's names)."""
        if code == DUMP_REQUESTED:
            return "DUMP_REQUESTED"
        if self.platform in (0x8201, 0x8203):  # Linux, Android: signal / si_code
            signal = LINUX_SIGNALS.get(code, f"signal {code}")
            sub = LINUX_SI_CODES.get(signal, {}).get(flags)
            return f"{signal} / {sub}" if sub else signal
        if self.platform in (0x8101, 0x8102):  # macOS, iOS: Mach exception / code
            if code == 0 and len(info) >= 2 and info[0] == 10:
                # EXC_CRASH from a signal: Crashpad keeps the signal in bits 24-27.
                number = (info[1] >> 24) & 0xF
                return f"EXC_CRASH / {MAC_SIGNALS.get(number, f'signal {number}')}"
            name = MACH_EXCEPTIONS.get(code, f"exception {code:#x}")
            sub = MACH_KERN_CODES.get(flags) if code == 1 else None
            return f"{name} / {sub}" if sub else name
        try:
            known = ExceptionCode(code)
        except ValueError:
            return f"{code:#010x}"
        if known.name.startswith("EXCEPTION_SIG"):  # the library's Linux names
            return f"{code:#010x}"
        return known.name

    def read_frames(self) -> None:
        exception = self.exception
        if exception is None:
            return
        located = self.context(exception.ThreadContext.Rva, exception.ThreadContext.DataSize)
        if located is None:
            return
        pc, sp, word = located
        lookup = _ModuleLookup(self.modules)
        frames = [lookup.frame(0, pc, "context")]
        stack = self.thread_stack(exception.ThreadId)
        truncated = False
        if stack is not None:
            start, rva, size = stack
            if start <= sp < start + size:
                begin = rva + (sp - start)
                end = min(rva + size, begin + self.limits.max_stack_bytes)
                fmt = "<Q" if word == 8 else "<I"
                for at in range(begin, end - word + 1, word):
                    (value,) = struct.unpack_from(fmt, self.data, at)
                    if lookup.find(value) is None:
                        continue
                    if len(frames) >= self.limits.max_frames:
                        truncated = True
                        break
                    frames.append(lookup.frame(len(frames), value, "scan"))
        self.fields["frames"] = tuple(frames)
        self.fields["frames_truncated"] = truncated

    def context(self, rva: int, size: int) -> tuple[int, int, int] | None:
        """(instruction pointer, stack pointer, word size) from a CPU context."""
        if rva + size > len(self.data):
            raise _Unreadable("the exception's CPU context runs past the end of the file")
        self.buf.seek(rva)
        if self.arch == 9 and size >= AMD64_CONTEXT_SIZE:
            amd64 = CONTEXT.parse(self.buf)
            return amd64.Rip, amd64.Rsp, 8
        if self.arch == 0 and size >= X86_CONTEXT_SIZE:
            x86 = WOW64_CONTEXT.parse(self.buf)
            return x86.Eip, x86.Esp, 4
        if self.arch in (12, 0x8003) and size >= ARM64_CONTEXT_SIZE:
            # The library has no ARM64 context: Crashpad's MINIDUMP_CONTEXT_ARM64
            # is flags, cpsr, x0-x30, then sp and pc.
            sp, pc = struct.unpack_from("<QQ", self.data, rva + 8 + 31 * 8)
            return pc, sp, 8
        return None

    def thread_stack(self, thread_id: int) -> tuple[int, int, int] | None:
        """(start address, rva, size) of a thread's saved stack, clipped to the file."""
        where = self.stream(THREAD_LIST, 4)
        if where is None:
            return None
        rva, size = where
        count = int.from_bytes(self.data[rva:rva + 4], "little")
        if 4 + count * THREAD_SIZE > size:
            raise _Unreadable(f"thread list of {count} threads is larger than its stream")
        for i in range(min(count, self.limits.max_threads)):
            self.buf.seek(rva + 4 + i * THREAD_SIZE)
            thread = MINIDUMP_THREAD.parse(self.buf)
            if thread.ThreadId == thread_id:
                stack = thread.Stack
                if stack.Rva + stack.DataSize > len(self.data):
                    # Noted; frame 0 and the stack that is in the file still count.
                    self.fields.setdefault("error", "the crashing thread's stack runs past "
                                           "the end of the file: truncated or corrupt")
                if stack.Rva >= len(self.data):
                    return None
                return (stack.StartOfMemoryRange, stack.Rva,
                        min(stack.DataSize, len(self.data) - stack.Rva))
        return None


class _ModuleLookup:
    """Address to module by bisection over the modules sorted by base."""

    def __init__(self, modules: list[Module]) -> None:
        self.modules = sorted((m for m in modules if m.size > 0), key=lambda m: m.base)
        self.bases = [m.base for m in self.modules]

    def find(self, address: int) -> Module | None:
        i = bisect.bisect_right(self.bases, address) - 1
        if i >= 0 and address < self.modules[i].base + self.modules[i].size:
            return self.modules[i]
        return None

    def frame(self, index: int, address: int, trust: str) -> Frame:
        module = self.find(address)
        if module is None:
            return Frame(index, address, None, None, trust)
        return Frame(index, address, _base_name(module.name), address - module.base, trust)


def _base_name(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def _file_version(info: Any) -> str | None:
    """The VS_FIXEDFILEINFO file version as a.b.c.d, None when absent."""
    if info is None or info.dwSignature != VS_FFI_SIGNATURE:
        return None
    ms, ls = info.dwFileVersionMS, info.dwFileVersionLS
    if ms == 0 and ls == 0:
        return None
    return f"{ms >> 16}.{ms & 0xFFFF}.{ls >> 16}.{ls & 0xFFFF}"
