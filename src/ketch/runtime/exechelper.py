"""The exec helper: a tiny static program, run from a sealed memfd, that execs the container's
process as the last step of the init.

Why it exists (CVE-2019-5736): when the init execs the container's program directly, a
program that is a script starting with ``#!/proc/self/exe`` makes the kernel run the
*currently executing binary* as its interpreter, which for a Python init is the host's
Python interpreter. The container then holds the host binary as its own executable and can
reopen ``/proc/self/exe`` for writing once it is no longer busy. So the init never execs the
user's program itself. It execs this helper from a memfd sealed against writes
(F_SEAL_WRITE, F_SEAL_SHRINK, F_SEAL_GROW and F_SEAL_SEAL), and the helper execs the
program. Whatever the program does with ``/proc/self/exe`` reaches the sealed helper, which
cannot be modified and exists nowhere on the host's disk.

Why it is hand-assembled: no compiler is assumed on the machines that run ketch, and no
Python package ships such a program, so the ELF file is built here from machine code whose
assembly is written next to each instruction.

The calling convention between the init and the helper::

    argv = [MARKER, path, arg0, arg1, ...]    envp = the container's environment
    -> execve(path, [arg0, arg1, ...], envp)

``path`` is the executable the init already looked up in the container's PATH and ``arg0``
is ``process.args[0]`` as the config gives it, as runc passes it. The marker in argv[0]
tells a start by the runtime apart from a start as a script's interpreter (argv[0] is then
the interpreter's path, such as ``/proc/self/exe``) or by another program. Without the
marker the helper prints its own /proc/self/exe and exits with status 126, where it would
otherwise exec the script again and loop. When execve fails, the helper prints
``ketch-runc: exec PATH failed: errno N`` to stderr and exits with 127 for ENOENT and 126
for any other error, the statuses a shell uses.
"""

from __future__ import annotations

import fcntl
import os
import platform
import struct

from ketch.errors import SystemFailure

MARKER = "ketch-runc-exec"
MEMFD_NAME = "ketch-runc-exec"

# memfd_create(2) flag for an executable memfd (Linux 6.3). When vm.memfd_noexec is set,
# a memfd made without it cannot be executed; older kernels reject the flag with EINVAL.
MFD_EXEC = 0x0010

_LOAD_ADDRESS = 0x400000
_ELF_HEADER_SIZE = 64
_PROGRAM_HEADER_SIZE = 56
_PROGRAM_HEADER_COUNT = 2
_CODE_OFFSET = _ELF_HEADER_SIZE + _PROGRAM_HEADER_SIZE * _PROGRAM_HEADER_COUNT

# Bytes of the stack reserved for the digit buffer and the readlink buffer, so that the
# return addresses pushed by `call` land below them.
_SCRATCH_SIZE = 1024


class _Assembler:
    """Collects machine code and fixes up 32-bit and 8-bit relative references to labels."""

    def __init__(self) -> None:
        self.code = bytearray()
        self.labels: dict[str, int] = {}
        self.fixups: list[tuple[int, str, int]] = []

    def emit(self, machine_code: bytes) -> None:
        self.code += machine_code

    def emit_rel32(self, opcode: bytes, label: str) -> None:
        """Emit an instruction ending in a rel32 operand that refers to ``label``."""
        self.code += opcode
        self.fixups.append((len(self.code), label, 4))
        self.code += b"\0\0\0\0"

    def emit_rel8(self, opcode: bytes, label: str) -> None:
        self.code += opcode
        self.fixups.append((len(self.code), label, 1))
        self.code += b"\0"

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def data(self, name: str, value: bytes) -> None:
        self.label(name)
        self.code += value

    def assemble(self) -> bytes:
        for position, label, size in self.fixups:
            # The displacement counts from the end of the operand, which ends the
            # instruction in every use here.
            displacement = self.labels[label] - (position + size)
            fmt = "<i" if size == 4 else "<b"
            self.code[position : position + size] = struct.pack(fmt, displacement)
        return bytes(self.code)


def _x86_64_code() -> bytes:
    fail_prefix = b"ketch-runc: exec "
    fail_middle = b" failed: errno "
    reject_prefix = b"ketch-runc: the exec helper "
    reject_suffix = b" was not started by the runtime (argv[0] is not its marker)\n"
    marker = MARKER.encode() + b"\0"

    a = _Assembler()
    a.emit(b"\x48\x89\xe3")  # mov rbx, rsp            ; rbx -> argc, argv..., envp...
    a.emit(b"\x48\x81\xec" + struct.pack("<i", _SCRATCH_SIZE))  # sub rsp, SCRATCH
    a.emit(b"\x48\x83\x3b\x03")  # cmp qword [rbx], 3   ; marker, path, arg0
    a.emit_rel32(b"\x0f\x82", "reject")  # jb reject
    a.emit(b"\x48\x8b\x73\x08")  # mov rsi, [rbx+8]     ; argv[0]
    a.emit_rel32(b"\x48\x8d\x3d", "marker")  # lea rdi, [rip+marker]
    a.emit(b"\xb9" + struct.pack("<i", len(marker)))  # mov ecx, len(marker) with NUL
    a.emit(b"\xf3\xa6")  # repe cmpsb                   ; stops at argv[0]'s first mismatch
    a.emit_rel32(b"\x0f\x85", "reject")  # jne reject

    a.emit(b"\x48\x8b\x7b\x10")  # mov rdi, [rbx+16]    ; path = argv[1]
    a.emit(b"\x48\x8d\x73\x18")  # lea rsi, [rbx+24]    ; argv + 2
    a.emit(b"\x48\x8b\x03")  # mov rax, [rbx]           ; argc
    a.emit(b"\x48\x8d\x54\xc3\x10")  # lea rdx, [rbx+rax*8+16]   ; envp
    a.emit(b"\xb8\x3b\x00\x00\x00")  # mov eax, 59 (execve)
    a.emit(b"\x0f\x05")  # syscall                      ; returns only on failure

    a.emit(b"\xf7\xd8")  # neg eax                      ; errno
    a.emit(b"\x41\x89\xc4")  # mov r12d, eax
    a.emit_rel32(b"\x48\x8d\x35", "fail_prefix")  # lea rsi, [rip+fail_prefix]
    a.emit(b"\xba" + struct.pack("<i", len(fail_prefix)))  # mov edx, len
    a.emit_rel32(b"\xe8", "write_stderr")  # call write_stderr
    a.emit(b"\x48\x8b\x73\x10")  # mov rsi, [rbx+16]    ; path
    a.emit_rel32(b"\xe8", "write_string")  # call write_string
    a.emit_rel32(b"\x48\x8d\x35", "fail_middle")  # lea rsi, [rip+fail_middle]
    a.emit(b"\xba" + struct.pack("<i", len(fail_middle)))  # mov edx, len
    a.emit_rel32(b"\xe8", "write_stderr")  # call write_stderr

    a.emit(b"\x44\x89\xe0")  # mov eax, r12d            ; errno in decimal, then "\n"
    a.emit(b"\x48\x8d\x73\xff")  # lea rsi, [rbx-1]
    a.emit(b"\xc6\x06\x0a")  # mov byte [rsi], 10
    a.label("digit")
    a.emit(b"\x31\xd2")  # xor edx, edx
    a.emit(b"\xb9\x0a\x00\x00\x00")  # mov ecx, 10
    a.emit(b"\xf7\xf1")  # div ecx
    a.emit(b"\x80\xc2\x30")  # add dl, '0'
    a.emit(b"\x48\xff\xce")  # dec rsi
    a.emit(b"\x88\x16")  # mov [rsi], dl
    a.emit(b"\x85\xc0")  # test eax, eax
    a.emit_rel8(b"\x75", "digit")  # jnz digit
    a.emit(b"\x48\x89\xda")  # mov rdx, rbx
    a.emit(b"\x48\x29\xf2")  # sub rdx, rsi
    a.emit_rel32(b"\xe8", "write_stderr")  # call write_stderr

    a.emit(b"\xbf\x7e\x00\x00\x00")  # mov edi, 126
    a.emit(b"\x41\x83\xfc\x02")  # cmp r12d, 2 (ENOENT)
    a.emit_rel8(b"\x75", "exit")  # jne exit
    a.emit(b"\xbf\x7f\x00\x00\x00")  # mov edi, 127
    a.label("exit")
    a.emit(b"\xb8\xe7\x00\x00\x00")  # mov eax, 231 (exit_group)
    a.emit(b"\x0f\x05")  # syscall

    a.label("reject")
    a.emit_rel32(b"\x48\x8d\x35", "reject_prefix")  # lea rsi, [rip+reject_prefix]
    a.emit(b"\xba" + struct.pack("<i", len(reject_prefix)))  # mov edx, len
    a.emit_rel32(b"\xe8", "write_stderr")  # call write_stderr
    a.emit_rel32(b"\x48\x8d\x3d", "self_exe")  # lea rdi, [rip+self_exe]
    a.emit(b"\x48\x8d\xb3\x00\xfe\xff\xff")  # lea rsi, [rbx-512]
    a.emit(b"\xba\x00\x01\x00\x00")  # mov edx, 256
    a.emit(b"\xb8\x59\x00\x00\x00")  # mov eax, 89 (readlink)
    a.emit(b"\x0f\x05")  # syscall
    a.emit(b"\x48\x85\xc0")  # test rax, rax
    a.emit_rel8(b"\x7e", "reject_suffix")  # jle reject_suffix   ; print no path on error
    a.emit(b"\x48\x89\xc2")  # mov rdx, rax
    a.emit(b"\x48\x8d\xb3\x00\xfe\xff\xff")  # lea rsi, [rbx-512]
    a.emit_rel32(b"\xe8", "write_stderr")  # call write_stderr
    a.label("reject_suffix")
    a.emit_rel32(b"\x48\x8d\x35", "reject_suffix_text")  # lea rsi, [rip+reject_suffix_text]
    a.emit(b"\xba" + struct.pack("<i", len(reject_suffix)))  # mov edx, len
    a.emit_rel32(b"\xe8", "write_stderr")  # call write_stderr
    a.emit(b"\xbf\x7e\x00\x00\x00")  # mov edi, 126
    a.emit_rel8(b"\xeb", "exit")  # jmp exit

    a.label("write_string")  # rsi: NUL-terminated string; falls through to write_stderr
    a.emit(b"\x48\x89\xf7")  # mov rdi, rsi
    a.emit(b"\x31\xc0")  # xor eax, eax
    a.emit(b"\x48\xc7\xc1\xff\xff\xff\xff")  # mov rcx, -1
    a.emit(b"\xf2\xae")  # repne scasb
    a.emit(b"\x48\xf7\xd1")  # not rcx
    a.emit(b"\x48\xff\xc9")  # dec rcx                  ; strlen
    a.emit(b"\x48\x89\xca")  # mov rdx, rcx
    a.label("write_stderr")  # rsi: buffer, rdx: length
    a.emit(b"\xbf\x02\x00\x00\x00")  # mov edi, 2
    a.emit(b"\xb8\x01\x00\x00\x00")  # mov eax, 1 (write)
    a.emit(b"\x0f\x05")  # syscall
    a.emit(b"\xc3")  # ret

    a.data("marker", marker)
    a.data("fail_prefix", fail_prefix)
    a.data("fail_middle", fail_middle)
    a.data("reject_prefix", reject_prefix)
    a.data("reject_suffix_text", reject_suffix)
    a.data("self_exe", b"/proc/self/exe\0")
    return a.assemble()


def _elf_file(code: bytes, machine: int) -> bytes:
    """Wrap ``code`` in a static ELF64 executable with one read+execute segment."""
    size = _CODE_OFFSET + len(code)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # 64-bit, little-endian, SysV
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH",
        2,  # ET_EXEC
        machine,
        1,  # EV_CURRENT
        _LOAD_ADDRESS + _CODE_OFFSET,  # entry point
        _ELF_HEADER_SIZE,  # program header table offset
        0,  # no section headers
        0,  # flags
        _ELF_HEADER_SIZE,
        _PROGRAM_HEADER_SIZE,
        _PROGRAM_HEADER_COUNT,
        64,  # section header entry size
        0,
        0,
    )
    load = struct.pack(
        "<IIQQQQQQ",
        1,  # PT_LOAD
        5,  # PF_R | PF_X
        0,
        _LOAD_ADDRESS,
        _LOAD_ADDRESS,
        size,
        size,
        0x1000,
    )
    # PT_GNU_STACK without PF_X asks for a non-executable stack.
    stack = struct.pack("<IIQQQQQQ", 0x6474E551, 6, 0, 0, 0, 0, 0, 16)
    return header + load + stack + code


def helper_program() -> bytes:
    """Return the helper as an ELF file for this machine's architecture."""
    machine = platform.machine()
    if machine == "x86_64":
        return _elf_file(_x86_64_code(), machine=62)  # EM_X86_64
    # Limitation: the helper exists only for x86_64, so containers cannot start on other
    # architectures (aarch64 included) until their machine code is written and tested.
    raise SystemFailure(
        f"the exec helper is built only for x86_64, and this machine is {machine}; "
        "containers cannot be started here yet"
    )


def sealed_helper_fd() -> int:
    """Write the helper into a new memfd, seal it, and return the close-on-exec fd.

    The seals make the file immutable for everyone, root included, for as long as it
    exists, so a container process that reaches it through /proc/<pid>/exe cannot
    change what later runs from it.
    """
    program = helper_program()
    flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
    try:
        fd = os.memfd_create(MEMFD_NAME, flags | MFD_EXEC)
    except OSError:
        fd = os.memfd_create(MEMFD_NAME, flags)
    try:
        written = os.write(fd, program)
        if written != len(program):
            raise SystemFailure(f"short write to the exec helper memfd: {written} bytes")
        seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    except BaseException:
        os.close(fd)
        raise
    return fd
