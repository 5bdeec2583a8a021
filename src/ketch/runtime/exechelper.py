"""The exec helper: a tiny static program, run from a sealed memfd, that execs the container's
process as the last step of the init.

Why it exists (CVE-2019-5736): when the init execs the container's program directly, a
program that is a script starting with ``#!/proc/self/exe`` makes the kernel run the
*currently executing binary* as its interpreter, which for a Python init is the host's
Python interpreter. The container then runs the host binary as its own executable and can
reopen ``/proc/self/exe`` for writing once it is no longer busy. So the init never execs the
user's program itself. It execs this helper from a memfd sealed against writes
(F_SEAL_WRITE, F_SEAL_SHRINK, F_SEAL_GROW and F_SEAL_SEAL), and the helper execs the
program. Whatever the program does with ``/proc/self/exe`` reaches the sealed helper, which
cannot be modified and exists nowhere on the host's disk.

Why it is hand-assembled: no compiler is assumed on the machines that run ketch, and no
Python package ships such a program, so the ELF file is built here from machine code whose
assembly is written next to each instruction. There is code for x86_64 and for aarch64;
the aarch64 code is tested under qemu-aarch64-static when that is installed.

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
import struct

from ketch.errors import SystemFailure

MARKER = "ketch-runc-exec"
MEMFD_NAME = "ketch-runc-exec"

# memfd_create(2) flag for an executable memfd (Linux 6.3). When vm.memfd_noexec is set,
# a memfd made without it cannot be executed. Older kernels reject the flag with EINVAL.
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
    """Collects machine code and fixes up relative references to labels.

    x86-64 references are rel32 or rel8 operands that end their instruction. AArch64
    ones are bit fields of a 32-bit instruction word: imm19 (conditional branches,
    cbz, cbnz), imm26 (b, bl) and the split 21-bit offset of adr.
    """

    def __init__(self) -> None:
        self.code = bytearray()
        self.labels: dict[str, int] = {}
        self.fixups: list[tuple[int, str, str]] = []

    def emit(self, machine_code: bytes) -> None:
        self.code += machine_code

    def emit_rel32(self, opcode: bytes, label: str) -> None:
        """Emit an instruction ending in a rel32 operand that refers to ``label``."""
        self.code += opcode
        self.fixups.append((len(self.code), label, "rel32"))
        self.code += b"\0\0\0\0"

    def emit_rel8(self, opcode: bytes, label: str) -> None:
        self.code += opcode
        self.fixups.append((len(self.code), label, "rel8"))
        self.code += b"\0"

    def emit_word(self, word: int) -> None:
        """Emit one AArch64 instruction."""
        self.code += struct.pack("<I", word)

    def emit_word_to(self, word: int, label: str, field: str) -> None:
        """Emit an AArch64 instruction whose ``field`` (imm19, imm26, adr) is ``label``."""
        self.fixups.append((len(self.code), label, field))
        self.emit_word(word)

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def data(self, name: str, value: bytes) -> None:
        self.label(name)
        self.code += value

    def assemble(self) -> bytes:
        for position, label, field in self.fixups:
            target = self.labels[label]
            if field == "rel32":
                self.code[position : position + 4] = struct.pack("<i", target - position - 4)
            elif field == "rel8":
                self.code[position : position + 1] = struct.pack("<b", target - position - 1)
            else:
                word = struct.unpack_from("<I", self.code, position)[0]
                word |= _aarch64_offset_bits(field, target - position)
                struct.pack_into("<I", self.code, position, word)
        return bytes(self.code)


def _aarch64_offset_bits(field: str, offset: int) -> int:
    if field == "adr":
        return ((offset & 0x3) << 29) | (((offset >> 2) & 0x7FFFF) << 5)
    if offset % 4:
        raise ValueError(f"branch offset {offset} is not a multiple of 4")
    if field == "imm19":
        return ((offset >> 2) & 0x7FFFF) << 5
    return (offset >> 2) & 0x3FFFFFF  # imm26


_MESSAGES = (
    b"ketch-runc: exec ",
    b" failed: errno ",
    b"ketch-runc: the exec helper ",
    b" was not started by the runtime (argv[0] is not its marker)\n",
    MARKER.encode() + b"\0",
)


def _x86_64_code() -> bytes:
    fail_prefix, fail_middle, reject_prefix, reject_suffix, marker = _MESSAGES

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


def _aarch64_code() -> bytes:
    fail_prefix, fail_middle, reject_prefix, reject_suffix, marker = _MESSAGES
    x19 = 19

    def movz(register: int, value: int) -> int:  # mov xN, #value (0 <= value < 65536)
        return 0xD2800000 | (value << 5) | register

    def load_x(register: int, base: int, offset: int) -> int:  # ldr xN, [xB, #offset]
        return 0xF9400000 | ((offset // 8) << 10) | (base << 5) | register

    a = _Assembler()
    a.emit_word(0x910003F3)  # mov x19, sp              ; x19 -> argc, argv..., envp...
    a.emit_word(0xD1000000 | (_SCRATCH_SIZE << 10) | (31 << 5) | 31)  # sub sp, sp, SCRATCH
    a.emit_word(load_x(0, x19, 0))  # ldr x0, [x19]     ; argc
    a.emit_word(0xF1000C1F)  # cmp x0, #3                ; marker, path, arg0
    a.emit_word_to(0x54000003, "reject", "imm19")  # b.lo reject
    a.emit_word(load_x(1, x19, 8))  # ldr x1, [x19, #8] ; argv[0]
    a.emit_word_to(0x10000002, "marker", "adr")  # adr x2, marker
    a.label("compare")
    a.emit_word(0x38401423)  # ldrb w3, [x1], #1
    a.emit_word(0x38401444)  # ldrb w4, [x2], #1
    a.emit_word(0x6B04007F)  # cmp w3, w4
    a.emit_word_to(0x54000001, "reject", "imm19")  # b.ne reject
    a.emit_word_to(0x35000004, "compare", "imm19")  # cbnz w4, compare ; up to the NUL

    a.emit_word(load_x(0, x19, 16))  # ldr x0, [x19, #16] ; path = argv[1]
    a.emit_word(0x91006261)  # add x1, x19, #24          ; argv + 2
    a.emit_word(load_x(2, x19, 0))  # ldr x2, [x19]     ; argc
    a.emit_word(0x8B020E62)  # add x2, x19, x2, lsl #3
    a.emit_word(0x91004042)  # add x2, x2, #16           ; envp
    a.emit_word(movz(8, 221))  # mov x8, #221 (execve)
    a.emit_word(0xD4000001)  # svc #0                    ; returns only on failure

    a.emit_word(0x4B0003F4)  # neg w20, w0               ; errno
    a.emit_word_to(0x10000001, "fail_prefix", "adr")  # adr x1, fail_prefix
    a.emit_word(movz(2, len(fail_prefix)))  # mov x2, #len
    a.emit_word_to(0x94000000, "write_stderr", "imm26")  # bl write_stderr
    a.emit_word(load_x(1, x19, 16))  # ldr x1, [x19, #16] ; path
    a.emit_word_to(0x94000000, "write_string", "imm26")  # bl write_string
    a.emit_word_to(0x10000001, "fail_middle", "adr")  # adr x1, fail_middle
    a.emit_word(movz(2, len(fail_middle)))  # mov x2, #len
    a.emit_word_to(0x94000000, "write_stderr", "imm26")  # bl write_stderr

    a.emit_word(0x2A1403E0)  # mov w0, w20               ; errno in decimal, then "\n"
    a.emit_word(0xD1000661)  # sub x1, x19, #1
    a.emit_word(0x52800143)  # mov w3, #10
    a.emit_word(0x39000023)  # strb w3, [x1]
    a.label("digit")
    a.emit_word(0x1AC30804)  # udiv w4, w0, w3
    a.emit_word(0x1B038085)  # msub w5, w4, w3, w0       ; w5 = w0 % 10
    a.emit_word(0x1100C0A5)  # add w5, w5, #'0'
    a.emit_word(0xD1000421)  # sub x1, x1, #1
    a.emit_word(0x39000025)  # strb w5, [x1]
    a.emit_word(0x2A0403E0)  # mov w0, w4
    a.emit_word_to(0x35000000, "digit", "imm19")  # cbnz w0, digit
    a.emit_word(0xCB010262)  # sub x2, x19, x1
    a.emit_word_to(0x94000000, "write_stderr", "imm26")  # bl write_stderr

    a.emit_word(movz(0, 126))  # mov x0, #126
    a.emit_word(0x71000A9F)  # cmp w20, #2 (ENOENT)
    a.emit_word_to(0x54000001, "exit", "imm19")  # b.ne exit
    a.emit_word(movz(0, 127))  # mov x0, #127
    a.label("exit")
    a.emit_word(movz(8, 94))  # mov x8, #94 (exit_group)
    a.emit_word(0xD4000001)  # svc #0

    a.label("reject")
    a.emit_word_to(0x10000001, "reject_prefix", "adr")  # adr x1, reject_prefix
    a.emit_word(movz(2, len(reject_prefix)))  # mov x2, #len
    a.emit_word_to(0x94000000, "write_stderr", "imm26")  # bl write_stderr
    a.emit_word(0x92800C60)  # mov x0, #-100 (AT_FDCWD)
    a.emit_word_to(0x10000001, "self_exe", "adr")  # adr x1, self_exe
    a.emit_word(0xD1080262)  # sub x2, x19, #512
    a.emit_word(movz(3, 256))  # mov x3, #256
    a.emit_word(movz(8, 78))  # mov x8, #78 (readlinkat)
    a.emit_word(0xD4000001)  # svc #0
    a.emit_word(0xF100001F)  # cmp x0, #0
    a.emit_word_to(0x5400000D, "reject_suffix", "imm19")  # b.le reject_suffix
    a.emit_word(0xAA0003E2)  # mov x2, x0
    a.emit_word(0xD1080261)  # sub x1, x19, #512
    a.emit_word_to(0x94000000, "write_stderr", "imm26")  # bl write_stderr
    a.label("reject_suffix")
    a.emit_word_to(0x10000001, "reject_suffix_text", "adr")  # adr x1, reject_suffix_text
    a.emit_word(movz(2, len(reject_suffix)))  # mov x2, #len
    a.emit_word_to(0x94000000, "write_stderr", "imm26")  # bl write_stderr
    a.emit_word(movz(0, 126))  # mov x0, #126
    a.emit_word_to(0x14000000, "exit", "imm26")  # b exit

    a.label("write_string")  # x1: NUL-terminated string; ends in write_stderr
    a.emit_word(movz(2, 0))  # mov x2, #0
    a.label("strlen")
    a.emit_word(0x38626823)  # ldrb w3, [x1, x2]
    a.emit_word_to(0x34000003, "write_stderr", "imm19")  # cbz w3, write_stderr
    a.emit_word(0x91000442)  # add x2, x2, #1
    a.emit_word_to(0x14000000, "strlen", "imm26")  # b strlen
    a.label("write_stderr")  # x1: buffer, x2: length
    a.emit_word(movz(0, 2))  # mov x0, #2
    a.emit_word(movz(8, 64))  # mov x8, #64 (write)
    a.emit_word(0xD4000001)  # svc #0
    a.emit_word(0xD65F03C0)  # ret

    a.data("marker", marker)
    a.data("fail_prefix", fail_prefix)
    a.data("fail_middle", fail_middle)
    a.data("reject_prefix", reject_prefix)
    a.data("reject_suffix_text", reject_suffix)
    a.data("self_exe", b"/proc/self/exe\0")
    return a.assemble()


def _elf_file(code: bytes, machine: int, page_size: int) -> bytes:
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
        page_size,
    )
    # PT_GNU_STACK without PF_X asks for a non-executable stack.
    stack = struct.pack("<IIQQQQQQ", 0x6474E551, 6, 0, 0, 0, 0, 0, 16)
    return header + load + stack + code


def helper_program(machine: str | None = None) -> bytes:
    """Return the helper as an ELF file for ``machine`` (default: this machine's, as
    os.uname() names it)."""
    machine = machine or os.uname().machine
    if machine == "x86_64":
        return _elf_file(_x86_64_code(), machine=62, page_size=0x1000)  # EM_X86_64
    if machine == "aarch64":
        # 64 KiB: the largest page size AArch64 kernels use.
        return _elf_file(_aarch64_code(), machine=183, page_size=0x10000)  # EM_AARCH64
    # Limitation: the helper exists for x86_64 and aarch64 only, so containers cannot
    # start on other architectures until their machine code is written and tested.
    raise SystemFailure(
        f"the exec helper is built only for x86_64 and aarch64, and this machine is "
        f"{machine}; containers cannot be started here yet"
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
