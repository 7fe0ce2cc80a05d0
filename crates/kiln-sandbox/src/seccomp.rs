//! The seccomp filter of every run: docker's default profile, kept as data in
//! `seccomp/profile.toml` (which says where each rule comes from), compiled here to classic BPF.
//!
//! # Why kiln compiles its own BPF
//!
//! The filter is installed in the forked child, where nothing may allocate, so it is compiled
//! beforehand on the setup thread into a plain array of instructions. The profile needs more
//! than one result per filter (allow, `EPERM`, `ENOSYS` for `clone3`, errno 0 for the sync
//! calls), argument checks on 32- and 64-bit values, i386 binaries next to x86_64 ones, and no
//! `no_new_privs` (a setuid `su` or `ping` must keep working, as under docker). `libseccomp`
//! does all that but would make every build of kiln need the C library's headers;
//! `seccompiler` gives one match and one mismatch action per filter, kills foreign
//! architectures and sets `no_new_privs` when it installs. The compiler below is small, and the
//! unit tests run every program it makes through an interpreter.
//!
//! # The program
//!
//! It checks the architecture first (anything kiln has no table for is killed), then walks a
//! binary search tree over the syscall number down to the rules of that number, which check
//! arguments in file order; a call that no rule matches fails with the profile's default errno.
//! On x86_64, x32 calls (bit 30 of the number) are killed, as libseccomp does for an
//! architecture the filter does not list.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::SandboxError;

const PROFILE: &str = include_str!("../seccomp/profile.toml");
const X86_64: &str = include_str!("../seccomp/x86_64.tbl");
const I386: &str = include_str!("../seccomp/i386.tbl");
const AARCH64: &str = include_str!("../seccomp/aarch64.tbl");

const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
const AUDIT_ARCH_AARCH64: u32 = 0xC000_00B7;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The filter's verdicts (`SECCOMP_RET_*`).
pub(crate) const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
pub(crate) const RET_KILL_PROCESS: u32 = libc::SECCOMP_RET_KILL_PROCESS;
/// `SECCOMP_RET_ERRNO` with `errno` as the call's result.
pub(crate) const fn ret_errno(errno: u32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (errno & libc::SECCOMP_RET_DATA)
}

/// Capability names as the profile spells them, by number.
const CAP_NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Profile {
    default_errno: u32,
    rule: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    #[serde(default)]
    #[allow(dead_code)] // documentation for the reader of the file
    comment: Option<String>,
    names: Vec<String>,
    action: Action,
    #[serde(default)]
    errno: Option<u32>,
    #[serde(default)]
    args: Vec<Arg>,
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    not_caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    option: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Action {
    Allow,
    Errno,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    MaskedEq,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Arg {
    index: u8,
    op: CmpOp,
    value: u64,
    #[serde(default)]
    mask: Option<u64>,
    bits: u8,
}

/// What a run asks of the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FilterOptions {
    /// The capability bounding set of the process (bit n: capability n).
    pub(crate) caps: u64,
    /// Make the sync calls succeed without doing anything (`RunSpec::skip_syncs`).
    pub(crate) skip_syncs: bool,
}

/// A compiled filter, ready for `seccomp(SECCOMP_SET_MODE_FILTER)`.
pub(crate) struct Program {
    insns: Vec<libc::sock_filter>,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Program({} instructions)", self.insns.len())
    }
}

impl Program {
    #[cfg(test)]
    fn instructions(&self) -> &[libc::sock_filter] {
        &self.insns
    }

    /// The `sock_fprog` the kernel reads; valid while `self` is.
    pub(crate) fn fprog(&self) -> libc::sock_fprog {
        libc::sock_fprog {
            len: self.insns.len() as libc::c_ushort,
            filter: self.insns.as_ptr().cast_mut(),
        }
    }
}

fn profile() -> Result<&'static Profile, SandboxError> {
    static PARSED: OnceLock<Result<Profile, String>> = OnceLock::new();
    PARSED
        .get_or_init(|| toml::from_str(PROFILE).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| SandboxError::Seccomp(format!("seccomp/profile.toml: {e}")))
}

fn table(text: &'static str) -> Result<BTreeMap<&'static str, u32>, SandboxError> {
    let mut names = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let parsed = line
            .split_once(' ')
            .and_then(|(nr, name)| Some((nr.parse::<u32>().ok()?, name)));
        let Some((nr, name)) = parsed else {
            return Err(SandboxError::Seccomp(format!(
                "syscall table line {line:?}: expected `<number> <name>`"
            )));
        };
        names.insert(name, nr);
    }
    Ok(names)
}

/// One architecture the filter lets in: its audit id and syscall table.
struct ArchTable {
    audit: u32,
    table: &'static str,
    /// x86_64: calls with the x32 bit are another ABI, refused.
    x32_bit: bool,
}

/// The host architecture's name (as `arches` in the profile says it) and the ABIs it runs.
fn host() -> Result<(&'static str, Vec<ArchTable>), SandboxError> {
    if cfg!(target_arch = "x86_64") {
        Ok(("x86_64", x86_64_arches()))
    } else if cfg!(target_arch = "aarch64") {
        Ok(("aarch64", aarch64_arches()))
    } else {
        Err(SandboxError::Seccomp(format!(
            "kiln has no system call table for {}: only x86_64 and aarch64 are supported",
            std::env::consts::ARCH
        )))
    }
}

fn x86_64_arches() -> Vec<ArchTable> {
    vec![
        ArchTable {
            audit: AUDIT_ARCH_X86_64,
            table: X86_64,
            x32_bit: true,
        },
        ArchTable {
            audit: AUDIT_ARCH_I386,
            table: I386,
            x32_bit: false,
        },
    ]
}

fn aarch64_arches() -> Vec<ArchTable> {
    vec![ArchTable {
        audit: AUDIT_ARCH_AARCH64,
        table: AARCH64,
        x32_bit: false,
    }]
}

/// Compile the profile for this host, these capabilities and options.
pub(crate) fn compile(options: FilterOptions) -> Result<Program, SandboxError> {
    let (arch, tables) = host()?;
    compile_for(arch, &tables, options)
}

fn cap_bit(name: &str) -> Result<u64, SandboxError> {
    CAP_NAMES
        .iter()
        .position(|c| *c == name)
        .map(|n| 1u64 << n)
        .ok_or_else(|| SandboxError::Seccomp(format!("unknown capability {name:?} in the profile")))
}

/// A rule as it applies to one syscall: conditions, then the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Leaf {
    conds: Vec<Arg>,
    ret: u32,
}

/// Which rules hold for this host and run, in file order, with their verdicts.
fn active_rules<'p>(
    profile: &'p Profile,
    arch: &str,
    options: FilterOptions,
) -> Result<Vec<(&'p Rule, u32)>, SandboxError> {
    let mut active = Vec::new();
    for rule in &profile.rule {
        let mut caps_ok = true;
        for c in &rule.caps {
            caps_ok &= options.caps & cap_bit(c)? != 0;
        }
        for c in &rule.not_caps {
            caps_ok &= options.caps & cap_bit(c)? == 0;
        }
        let arch_ok = rule.arches.is_empty() || rule.arches.iter().any(|a| a == arch);
        let option_ok = match rule.option.as_deref() {
            None => true,
            Some("skip_syncs") => options.skip_syncs,
            Some(other) => {
                return Err(SandboxError::Seccomp(format!(
                    "unknown option {other:?} in the profile"
                )));
            }
        };
        for a in &rule.args {
            let fits = a.bits == 64
                || (a.bits == 32
                    && a.value <= u64::from(u32::MAX)
                    && a.mask.is_none_or(|m| m <= u64::from(u32::MAX)));
            if a.index > 5 || !fits || (a.op == CmpOp::MaskedEq) != a.mask.is_some() {
                return Err(SandboxError::Seccomp(format!(
                    "bad argument check {a:?} for {:?} in the profile",
                    rule.names
                )));
            }
        }
        let ret = match (rule.action, rule.errno) {
            (Action::Allow, None) => RET_ALLOW,
            (Action::Errno, Some(e)) if e <= libc::SECCOMP_RET_DATA => ret_errno(e),
            _ => {
                return Err(SandboxError::Seccomp(format!(
                    "rule for {:?}: `errno` goes with action \"errno\" only, and must be below 65536",
                    rule.names
                )));
            }
        };
        if caps_ok && arch_ok && option_ok {
            active.push((rule, ret));
        }
    }
    Ok(active)
}

fn compile_for(
    arch: &str,
    tables: &[ArchTable],
    options: FilterOptions,
) -> Result<Program, SandboxError> {
    let profile = profile()?;
    let rules = active_rules(profile, arch, options)?;
    let default = ret_errno(profile.default_errno);
    let mut asm = Asm::default();
    asm.ld(OFF_ARCH);
    let sections: Vec<Label> = tables.iter().map(|_| asm.label()).collect();
    for (t, section) in tables.iter().zip(&sections) {
        asm.jeq_far(t.audit, *section);
    }
    asm.ret(RET_KILL_PROCESS);
    for (t, section) in tables.iter().zip(&sections) {
        asm.place(*section);
        let names = table(t.table)?;
        let mut by_nr: BTreeMap<u32, Vec<Leaf>> = BTreeMap::new();
        for (rule, ret) in &rules {
            for name in &rule.names {
                let Some(&nr) = names.get(name.as_str()) else {
                    continue;
                };
                let leaves = by_nr.entry(nr).or_default();
                // After an unconditional verdict nothing else is reached.
                if leaves.last().is_none_or(|l| !l.conds.is_empty()) {
                    leaves.push(Leaf {
                        conds: rule.args.clone(),
                        ret: *ret,
                    });
                }
            }
        }
        let mut ranges = ranges(&by_nr);
        if t.x32_bit {
            // x32 calls are killed, but not -1, which is no call at all: it gets the default errno.
            ranges = split_ranges(
                ranges,
                X32_SYSCALL_BIT,
                u32::MAX - 1,
                vec![Leaf {
                    conds: vec![],
                    ret: RET_KILL_PROCESS,
                }],
            );
        }
        asm.ld(OFF_NR);
        emit_tree(&mut asm, &ranges, default);
    }
    let insns = asm.assemble()?;
    if insns.len() > BPF_MAXINSNS {
        return Err(SandboxError::Seccomp(format!(
            "the filter has {} instructions, over the kernel's 4096",
            insns.len()
        )));
    }
    Ok(Program { insns })
}

/// Every syscall number from 0 to `u32::MAX` in ranges with the same rules: `(first, rules)`,
/// sorted; an empty list means the default verdict.
fn ranges(by_nr: &BTreeMap<u32, Vec<Leaf>>) -> Vec<(u32, Vec<Leaf>)> {
    let mut out: Vec<(u32, Vec<Leaf>)> = Vec::new();
    let mut push = |start: u32, leaves: &[Leaf]| {
        if out.last().is_none_or(|(_, l)| l != leaves) {
            out.push((start, leaves.to_vec()));
        }
    };
    let mut next: u64 = 0;
    for (&nr, leaves) in by_nr {
        if u64::from(nr) > next {
            push(next as u32, &[]);
        }
        push(nr, leaves);
        next = u64::from(nr) + 1;
    }
    if next <= u64::from(u32::MAX) {
        push(next as u32, &[]);
    }
    out
}

/// Replace what `ranges` says for `first..=last` with `leaves`.
fn split_ranges(
    ranges: Vec<(u32, Vec<Leaf>)>,
    first: u32,
    last: u32,
    leaves: Vec<Leaf>,
) -> Vec<(u32, Vec<Leaf>)> {
    let at = |nr: u32| -> Vec<Leaf> {
        ranges
            .iter()
            .rev()
            .find(|(start, _)| *start <= nr)
            .map(|(_, l)| l.clone())
            .unwrap_or_default()
    };
    let mut out: Vec<(u32, Vec<Leaf>)> = ranges
        .iter()
        .filter(|(start, _)| *start < first)
        .cloned()
        .collect();
    out.push((first, leaves));
    if let Some(after) = last.checked_add(1) {
        let tail = at(after);
        out.push((after, tail));
        out.extend(ranges.iter().filter(|(start, _)| *start > after).cloned());
    }
    out.dedup_by(|b, a| a.1 == b.1);
    out
}

/// The tree over `ranges` (A holds the syscall number), each leaf its rules, then `default`.
fn emit_tree(asm: &mut Asm, ranges: &[(u32, Vec<Leaf>)], default: u32) {
    if ranges.len() == 1 {
        emit_leaves(asm, &ranges[0].1, default);
        return;
    }
    let mid = ranges.len() / 2;
    let right = asm.label();
    asm.jge_far(ranges[mid].0, right);
    emit_tree(asm, &ranges[..mid], default);
    asm.place(right);
    emit_tree(asm, &ranges[mid..], default);
}

fn emit_leaves(asm: &mut Asm, leaves: &[Leaf], default: u32) {
    for leaf in leaves {
        if leaf.conds.is_empty() {
            asm.ret(leaf.ret);
            return;
        }
        let fail = asm.label();
        for cond in &leaf.conds {
            emit_cond(asm, cond, fail);
        }
        asm.ret(leaf.ret);
        asm.place(fail);
    }
    asm.ret(default);
}

/// Offsets in `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
fn off_arg(index: u8, high: bool) -> u32 {
    let low_first = cfg!(target_endian = "little");
    16 + 8 * u32::from(index) + if high == low_first { 4 } else { 0 }
}

/// Falls through when `cond` holds, jumps to `fail` when it does not.
fn emit_cond(asm: &mut Asm, cond: &Arg, fail: Label) {
    let pass = asm.label();
    let mask = cond.mask.unwrap_or(u64::MAX);
    let (lo, hi) = (cond.value as u32, (cond.value >> 32) as u32);
    let (mlo, mhi) = (mask as u32, (mask >> 32) as u32);
    let load_lo = |asm: &mut Asm| {
        asm.ld(off_arg(cond.index, false));
        if cond.op == CmpOp::MaskedEq {
            asm.and(mlo);
        }
    };
    // The low word decides for 32-bit checks, and for 64-bit ones once the high words are equal.
    let low_word = |asm: &mut Asm| match cond.op {
        CmpOp::Eq | CmpOp::MaskedEq => asm.jeq(lo, pass, fail),
        CmpOp::Ne => asm.jeq(lo, fail, pass),
        CmpOp::Lt => asm.jge(lo, fail, pass),
        CmpOp::Le => asm.jgt(lo, fail, pass),
        CmpOp::Gt => asm.jgt(lo, pass, fail),
        CmpOp::Ge => asm.jge(lo, pass, fail),
    };
    if cond.bits == 64 {
        let low = asm.label();
        asm.ld(off_arg(cond.index, true));
        match cond.op {
            CmpOp::Eq => asm.jeq(hi, low, fail),
            CmpOp::MaskedEq => {
                asm.and(mhi);
                asm.jeq(hi, low, fail);
            }
            CmpOp::Ne => asm.jeq(hi, low, pass),
            CmpOp::Gt | CmpOp::Ge | CmpOp::Lt | CmpOp::Le => {
                let (above, below) = match cond.op {
                    CmpOp::Gt | CmpOp::Ge => (pass, fail),
                    _ => (fail, pass),
                };
                let equal = asm.label();
                asm.jgt(hi, above, equal);
                asm.place(equal);
                asm.jeq(hi, low, below);
            }
        }
        asm.place(low);
    }
    load_lo(asm);
    low_word(asm);
    asm.place(pass);
}

/// A jump target, placed once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Label(usize);

#[derive(Debug, Clone, Copy)]
enum Insn {
    Ld(u32),
    And(u32),
    /// Conditional jump: opcode, constant, then and else.
    Jmp(u16, u32, Label, Label),
    Ja(Label),
    Ret(u32),
    Place(Label),
}

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_ALU_AND_K: u16 = 0x54;
const BPF_JMP_JA: u16 = 0x05;
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_JMP_JGT_K: u16 = 0x25;
const BPF_JMP_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;
/// The kernel's limit on a classic BPF program.
const BPF_MAXINSNS: usize = 4096;

/// A tiny assembler: forward labels, checked jump offsets.
#[derive(Default)]
struct Asm {
    insns: Vec<Insn>,
    labels: usize,
}

impl Asm {
    fn label(&mut self) -> Label {
        self.labels += 1;
        Label(self.labels - 1)
    }
    fn place(&mut self, l: Label) {
        self.insns.push(Insn::Place(l));
    }
    fn ld(&mut self, off: u32) {
        self.insns.push(Insn::Ld(off));
    }
    fn and(&mut self, k: u32) {
        self.insns.push(Insn::And(k));
    }
    fn ret(&mut self, k: u32) {
        self.insns.push(Insn::Ret(k));
    }
    fn jeq(&mut self, k: u32, t: Label, f: Label) {
        self.insns.push(Insn::Jmp(BPF_JMP_JEQ_K, k, t, f));
    }
    fn jgt(&mut self, k: u32, t: Label, f: Label) {
        self.insns.push(Insn::Jmp(BPF_JMP_JGT_K, k, t, f));
    }
    fn jge(&mut self, k: u32, t: Label, f: Label) {
        self.insns.push(Insn::Jmp(BPF_JMP_JGE_K, k, t, f));
    }
    /// `if A == k goto far`: conditional offsets are 8 bits, so the far jump is a `ja`.
    fn jeq_far(&mut self, k: u32, far: Label) {
        let (hop, next) = (self.label(), self.label());
        self.jeq(k, hop, next);
        self.place(hop);
        self.insns.push(Insn::Ja(far));
        self.place(next);
    }
    /// `if A >= k goto far`, as [`Asm::jeq_far`].
    fn jge_far(&mut self, k: u32, far: Label) {
        let (hop, next) = (self.label(), self.label());
        self.jge(k, hop, next);
        self.place(hop);
        self.insns.push(Insn::Ja(far));
        self.place(next);
    }

    fn assemble(&self) -> Result<Vec<libc::sock_filter>, SandboxError> {
        let mut at = vec![usize::MAX; self.labels];
        let mut pc = 0;
        for i in &self.insns {
            match i {
                Insn::Place(l) => at[l.0] = pc,
                _ => pc += 1,
            }
        }
        let bad = |what: &str| SandboxError::Seccomp(format!("filter assembly: {what}"));
        let offset = |from: usize, to: Label| -> Result<usize, SandboxError> {
            let target = at[to.0];
            if target == usize::MAX || target <= from {
                return Err(bad("a jump to a label that is not placed ahead"));
            }
            Ok(target - from - 1)
        };
        let short = |n: usize| u8::try_from(n).map_err(|_| bad("a conditional jump over 255"));
        let insn = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
        let mut out = Vec::with_capacity(pc);
        for i in &self.insns {
            let here = out.len();
            out.push(match *i {
                Insn::Place(_) => continue,
                Insn::Ld(off) => insn(BPF_LD_W_ABS, 0, 0, off),
                Insn::And(k) => insn(BPF_ALU_AND_K, 0, 0, k),
                Insn::Ret(k) => insn(BPF_RET_K, 0, 0, k),
                Insn::Ja(to) => {
                    let k = u32::try_from(offset(here, to)?).map_err(|_| bad("ja too far"))?;
                    insn(BPF_JMP_JA, 0, 0, k)
                }
                Insn::Jmp(code, k, t, f) => {
                    let jt = short(offset(here, t)?)?;
                    let jf = short(offset(here, f)?)?;
                    insn(code, jt, jf, k)
                }
            });
        }
        Ok(out)
    }
}

/// Run `program` on one call, as the kernel would: the verdict.
#[cfg(test)]
pub(crate) fn evaluate(program: &Program, arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_ne_bytes());
    data[4..8].copy_from_slice(&arch.to_ne_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
    }
    let word = |off: u32| {
        let o = off as usize;
        u32::from_ne_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]])
    };
    let insns = &program.insns;
    let (mut pc, mut acc) = (0usize, 0u32);
    loop {
        let i = insns[pc];
        pc += 1;
        match i.code {
            BPF_LD_W_ABS => acc = word(i.k),
            BPF_ALU_AND_K => acc &= i.k,
            BPF_RET_K => return i.k,
            BPF_JMP_JA => pc += i.k as usize,
            BPF_JMP_JEQ_K | BPF_JMP_JGT_K | BPF_JMP_JGE_K => {
                let taken = match i.code {
                    BPF_JMP_JEQ_K => acc == i.k,
                    BPF_JMP_JGT_K => acc > i.k,
                    _ => acc >= i.k,
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            other => panic!("the interpreter does not know opcode {other:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::DEFAULT_CAPS;

    fn default_caps() -> u64 {
        DEFAULT_CAPS.iter().fold(0, |m, c| m | (1u64 << c))
    }

    fn x86(skip_syncs: bool, caps: u64) -> Program {
        compile_for(
            "x86_64",
            &x86_64_arches(),
            FilterOptions { caps, skip_syncs },
        )
        .unwrap()
    }

    fn nr(table_text: &'static str, name: &str) -> u32 {
        *table(table_text)
            .unwrap()
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not in the table"))
    }

    const EPERM: u32 = ret_errno(libc::EPERM as u32);

    #[test]
    fn every_name_in_the_profile_is_a_syscall_of_some_table() {
        let tables = [X86_64, I386, AARCH64].map(|t| table(t).unwrap());
        for rule in &profile().unwrap().rule {
            for name in &rule.names {
                assert!(
                    tables.iter().any(|t| t.contains_key(name.as_str())),
                    "{name:?} is in no syscall table: a typo?"
                );
            }
            for cap in rule.caps.iter().chain(&rule.not_caps) {
                cap_bit(cap).unwrap();
            }
        }
    }

    #[test]
    fn the_tables_agree_with_libc_on_this_host() {
        let t = table(if cfg!(target_arch = "x86_64") {
            X86_64
        } else {
            AARCH64
        })
        .unwrap();
        for (name, n) in [
            ("read", libc::SYS_read),
            ("keyctl", libc::SYS_keyctl),
            ("add_key", libc::SYS_add_key),
            ("unshare", libc::SYS_unshare),
            ("clone3", libc::SYS_clone3),
            ("fsync", libc::SYS_fsync),
            ("sync_file_range", libc::SYS_sync_file_range),
            ("ioctl", libc::SYS_ioctl),
            ("mseal", libc::SYS_mseal),
        ] {
            assert_eq!(t[name], n as u32, "{name}");
        }
    }

    #[test]
    fn docker_defaults_on_x86_64() {
        let p = x86(false, default_caps());
        let call =
            |name: &str, args: [u64; 6]| evaluate(&p, AUDIT_ARCH_X86_64, nr(X86_64, name), args);
        let none = [0; 6];
        for allowed in [
            "read",
            "write",
            "execve",
            "setresuid",
            "fsync",
            "chroot",
            "ptrace",
        ] {
            assert_eq!(call(allowed, none), RET_ALLOW, "{allowed}");
        }
        for denied in [
            "keyctl",
            "add_key",
            "request_key",
            "unshare",
            "setns",
            "mount",
            "umount2",
            "open_by_handle_at",
            "bpf",
            "kexec_load",
            "userfaultfd",
            "io_uring_setup",
        ] {
            assert_eq!(call(denied, none), EPERM, "{denied}");
        }
        assert_eq!(
            call("clone3", none),
            ret_errno(libc::ENOSYS as u32),
            "clone3 says ENOSYS so that libc falls back to clone"
        );
        let fork_flags = (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID) as u64 | 17;
        assert_eq!(call("clone", [fork_flags, 0, 0, 0, 0, 0]), RET_ALLOW);
        for ns in [libc::CLONE_NEWUSER, libc::CLONE_NEWNS, libc::CLONE_NEWNET] {
            let flags = fork_flags | ns as u64;
            assert_eq!(call("clone", [flags, 0, 0, 0, 0, 0]), EPERM, "{ns:#x}");
        }
        // Sockets: all but AF_ALG (38) and AF_VSOCK (40), judged on the int the kernel reads.
        for (family, verdict) in [
            (libc::AF_INET as u64, RET_ALLOW),
            (libc::AF_PACKET as u64, RET_ALLOW),
            (39, RET_ALLOW),
            (41, RET_ALLOW),
            (38, EPERM),
            (40, EPERM),
            ((1 << 32) | 38, EPERM),
        ] {
            assert_eq!(call("socket", [family, 1, 0, 0, 0, 0]), verdict, "{family}");
        }
        for (persona, verdict) in [
            (0, RET_ALLOW),
            (0xffff_ffff, RET_ALLOW),
            (0x0020_0000, EPERM),
        ] {
            assert_eq!(call("personality", [persona, 0, 0, 0, 0, 0]), verdict);
        }
        assert_eq!(evaluate(&p, AUDIT_ARCH_X86_64, 10_000, none), EPERM);
        assert_eq!(evaluate(&p, AUDIT_ARCH_X86_64, u32::MAX, none), EPERM);
        assert!(
            p.instructions().len() < 4096,
            "{} instructions",
            p.instructions().len()
        );
    }

    #[test]
    fn no_typing_into_terminals() {
        let p = x86(false, default_caps());
        let ioctl = |cmd: u64| {
            evaluate(
                &p,
                AUDIT_ARCH_X86_64,
                nr(X86_64, "ioctl"),
                [0, cmd, 0, 0, 0, 0],
            )
        };
        assert_eq!(ioctl(libc::TIOCSTI), EPERM);
        assert_eq!(ioctl(libc::TIOCLINUX), EPERM);
        assert_eq!(
            ioctl((1 << 40) | libc::TIOCSTI),
            EPERM,
            "the kernel reads cmd as 32 bits"
        );
        assert_eq!(ioctl(libc::TCGETS), RET_ALLOW);
        assert_eq!(ioctl(libc::TIOCGWINSZ), RET_ALLOW);
    }

    #[test]
    fn syncs_are_no_ops_only_when_asked() {
        let syncs = ["fsync", "fdatasync", "syncfs", "sync", "sync_file_range"];
        let real = x86(false, default_caps());
        let skip = x86(true, default_caps());
        for name in syncs {
            let n = nr(X86_64, name);
            assert_eq!(evaluate(&real, AUDIT_ARCH_X86_64, n, [0; 6]), RET_ALLOW);
            assert_eq!(
                evaluate(&skip, AUDIT_ARCH_X86_64, n, [0; 6]),
                ret_errno(0),
                "{name} returns 0 without reaching the kernel"
            );
            let n = nr(I386, name);
            assert_eq!(evaluate(&skip, AUDIT_ARCH_I386, n, [0; 6]), ret_errno(0));
        }
        assert_eq!(
            evaluate(&skip, AUDIT_ARCH_X86_64, nr(X86_64, "write"), [0; 6]),
            RET_ALLOW
        );
    }

    #[test]
    fn capabilities_open_their_calls_as_in_docker() {
        let admin = x86(false, default_caps() | (1 << 21));
        for name in ["unshare", "mount", "setns", "clone3"] {
            assert_eq!(
                evaluate(&admin, AUDIT_ARCH_X86_64, nr(X86_64, name), [0; 6]),
                RET_ALLOW,
                "{name} with CAP_SYS_ADMIN"
            );
        }
        let flags = libc::CLONE_NEWUSER as u64;
        assert_eq!(
            evaluate(
                &admin,
                AUDIT_ARCH_X86_64,
                nr(X86_64, "clone"),
                [flags, 0, 0, 0, 0, 0]
            ),
            RET_ALLOW
        );
        let without_chroot = x86(false, default_caps() & !(1 << 18));
        assert_eq!(
            evaluate(
                &without_chroot,
                AUDIT_ARCH_X86_64,
                nr(X86_64, "chroot"),
                [0; 6]
            ),
            EPERM
        );
    }

    #[test]
    fn i386_binaries_get_the_same_rules_and_other_abis_are_killed() {
        let p = x86(false, default_caps());
        let call = |name: &str| evaluate(&p, AUDIT_ARCH_I386, nr(I386, name), [0; 6]);
        assert_eq!(call("read"), RET_ALLOW);
        assert_eq!(call("socketcall"), RET_ALLOW);
        assert_eq!(call("clock_gettime64"), RET_ALLOW);
        assert_eq!(call("keyctl"), EPERM);
        assert_eq!(call("unshare"), EPERM);
        let x32_read = X32_SYSCALL_BIT;
        assert_eq!(
            evaluate(&p, AUDIT_ARCH_X86_64, x32_read, [0; 6]),
            RET_KILL_PROCESS
        );
        assert_eq!(
            evaluate(&p, AUDIT_ARCH_AARCH64, 63, [0; 6]),
            RET_KILL_PROCESS
        );
    }

    #[test]
    fn aarch64_compiles_with_its_own_numbers() {
        let p = compile_for(
            "aarch64",
            &aarch64_arches(),
            FilterOptions {
                caps: default_caps(),
                skip_syncs: true,
            },
        )
        .unwrap();
        let call = |name: &str| evaluate(&p, AUDIT_ARCH_AARCH64, nr(AARCH64, name), [0; 6]);
        assert_eq!(call("read"), RET_ALLOW);
        assert_eq!(call("keyctl"), EPERM);
        assert_eq!(call("fsync"), ret_errno(0));
        assert_eq!(call("clone3"), ret_errno(libc::ENOSYS as u32));
        assert_eq!(evaluate(&p, AUDIT_ARCH_X86_64, 0, [0; 6]), RET_KILL_PROCESS);
    }

    #[test]
    fn sixty_four_bit_comparisons() {
        // Every operator against values around the boundary, high word and low word.
        let value = 0x0000_0001_0000_0010u64;
        let probes = [
            0,
            value - 1,
            value,
            value + 1,
            0x0000_0002_0000_0000,
            0x0000_0001_0000_0000,
            0x0000_0000_ffff_ffff,
        ];
        for op in [
            CmpOp::Eq,
            CmpOp::Ne,
            CmpOp::Lt,
            CmpOp::Le,
            CmpOp::Gt,
            CmpOp::Ge,
        ] {
            let cond = Arg {
                index: 2,
                op,
                value,
                mask: None,
                bits: 64,
            };
            let mut asm = Asm::default();
            let fail = asm.label();
            emit_cond(&mut asm, &cond, fail);
            asm.ret(RET_ALLOW);
            asm.place(fail);
            asm.ret(EPERM);
            let p = Program {
                insns: asm.assemble().unwrap(),
            };
            for x in probes {
                let want = match op {
                    CmpOp::Eq => x == value,
                    CmpOp::Ne => x != value,
                    CmpOp::Lt => x < value,
                    CmpOp::Le => x <= value,
                    CmpOp::Gt => x > value,
                    CmpOp::Ge => x >= value,
                    CmpOp::MaskedEq => unreachable!(),
                };
                let got = evaluate(&p, 0, 0, [0, 0, x, 0, 0, 0]) == RET_ALLOW;
                assert_eq!(got, want, "{op:?} {x:#x} vs {value:#x}");
            }
        }
    }
}
