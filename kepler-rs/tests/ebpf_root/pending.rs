//! Pending pairs: drains leave nothing pending from the drained generation, a moved process is
//! charged to its new cgroup, two processes taking turns on one CPU both stay pending.

use super::*;

/// A drain flushes what every CPU holds pending for the generation it drains: a CPU that keeps
/// running the same process between idles charges its later slices in its own state, not in
/// the map, until another process runs there; without the flush that time would miss the
/// sample.
#[test]
fn a_drain_leaves_no_time_pending_from_the_drained_generation() {
    if !common::require_ebpf("loading the BPF program") {
        return;
    }
    for events in [
        CounterEvents::HARDWARE,
        CounterEvents([PerfEventSpec::SOFTWARE_CPU_CLOCK; 3]),
    ] {
        let mut program = EbpfProgram::load_with(&events)
            .unwrap_or_else(|e| panic!("eBPF program failed to load: {e}"));
        let mut flushed = 0;
        for _ in 0..20 {
            // Two threads of this process passing a message back and forth: the CPUs switch
            // between them and idle, the same (process, cgroup) pair again and again, whose
            // first slice after a drain goes to the map and the next ones stay pending.
            let (to_b, from_a) = std::sync::mpsc::channel::<u32>();
            let (to_a, from_b) = std::sync::mpsc::channel::<u32>();
            let partner = std::thread::spawn(move || {
                while let Ok(x) = from_a.recv() {
                    if to_a.send(x).is_err() {
                        break;
                    }
                }
            });
            for i in 0..2000 {
                to_b.send(i).unwrap();
                from_b.recv().unwrap();
            }
            drop(to_b);
            partner.join().unwrap();
            let before = pending_generations(&program);
            let drained_gen = program.generation();
            flushed += before.iter().filter(|g| **g == Some(drained_gen)).count();
            let d = program.drain();
            assert!(d.flush_errors.is_empty(), "{:?}", d.flush_errors);
            let after = pending_generations(&program);
            assert!(
                after.iter().all(|g| *g != Some(drained_gen)),
                "time of drained generation {drained_gen} still pending: {after:?}"
            );
        }
        println!(
            "counters build: {}; {flushed} CPU states held time of the drained generation before 20 drains",
            program.reads_counters()
        );
        assert!(
            flushed > 0,
            "nothing was ever pending: the test checks nothing"
        );
    }
}

/// A process moved to another cgroup is charged to the new one from the move on. A CPU that
/// switches between one process and idle keeps that (process, cgroup) pair pending and, to
/// save the cgroup lookup, takes it as unchanged while no task has changed cgroup since: the
/// move hook (`cgroup_attach_task`) must make every CPU read the cgroup id again.
#[test]
fn a_moved_process_is_charged_to_its_new_cgroup() {
    if !common::require_ebpf("loading the BPF program") {
        return;
    }
    let (Some(from), Some(to)) = (TestContainer::create(), TestContainer::create()) else {
        return;
    };
    let mut program =
        EbpfProgram::load().unwrap_or_else(|e| panic!("eBPF program failed to load: {e}"));
    // Busy for 1 ms, asleep for 1 ms, one process all along (exec keeps the pid): its CPU goes
    // between it and idle, the same pair again and again.
    let child = common::ChildGuard(common::spawn_in_cgroup(
        &from.dir,
        "exec python3 -c 'import time\nwhile True:\n t = time.perf_counter()\n while time.perf_counter() - t < 0.001: pass\n time.sleep(0.001)'",
    ));
    let pid = child.0.id();
    let (from_id, to_id) = (from.cgroup_id(), to.cgroup_id());
    let move_to =
        |c: &TestContainer| fs::write(c.dir.join("cgroup.procs"), pid.to_string()).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    // Right after each move, no CPU may take the process's old pair as still current. Whether
    // its CPU still holds that pair then depends on what else ran there: moves go on until
    // five did (an even number of them, so that the process ends in `from`).
    let (mut held, mut moved) = (0, 0);
    while moved < 400 && (held < 5 || moved % 2 == 1) {
        let i = moved;
        moved += 1;
        let (dst, old_id) = if i % 2 == 0 {
            (&to, from_id)
        } else {
            (&from, to_id)
        };
        let moves = program.cgroup_moves().unwrap();
        move_to(dst);
        let now = program.cgroup_moves().unwrap();
        assert!(now > moves, "the move of {pid} was not counted");
        let stale: Vec<_> = program
            .cpu_states()
            .unwrap()
            .into_iter()
            .flat_map(|cpu| cpu.slots)
            .filter(|s| s.key.tgid == pid && s.key.cgroup_id == old_id)
            .collect();
        held += stale.len();
        assert!(
            stale.iter().all(|s| s.moves < now),
            "a CPU takes {pid} in its old cgroup as its current pair after the move: {stale:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("{held} times a CPU held the moved process's old pair right after {moved} moves");
    assert!(
        held > 0,
        "no CPU ever held the moved process's pair: the test checks nothing"
    );

    // From the last move on, its time is in the new cgroup: the process is in `from` now,
    // frozen there while the source is drained, and thawed by the move.
    from.freeze(true);
    program.drain();
    let base = to.usage_usec();
    move_to(&to);
    for _ in 0..120 {
        std::thread::sleep(Duration::from_millis(250));
        if to.usage_usec() - base >= 500_000 {
            break;
        }
    }
    to.freeze(true);
    let drained = program.drain();
    let truth = (to.usage_usec() - base) as f64 / 1e6;
    to.freeze(false);
    from.freeze(false);
    let (in_to, in_from) = (
        drained_seconds(&drained, |k| k.tgid == pid && k.cgroup_id == to_id),
        drained_seconds(&drained, |k| k.tgid == pid && k.cgroup_id == from_id),
    );
    let error = (in_to - truth).abs() / truth;
    println!(
        "after the move: eBPF {in_to:.4} s in the new cgroup, {in_from:.4} s in the old one; cpu.stat of the new one {truth:.4} s; error {:.3}%",
        error * 100.0
    );
    assert!(truth >= 0.5, "the process got only {truth} s in 30 s");
    // The process switches 1,000 times a second; the kernel's count leaves interrupt and
    // steal time out of each slice, the program's clock does not (0.1-1.6 % on the test VM).
    assert!(error <= 0.05, "eBPF {in_to} s vs cpu.stat {truth} s");
    assert!(
        in_from < 0.005,
        "{in_from} s charged to the old cgroup after the move"
    );
}

/// Two processes taking turns on one CPU (`yes` writing into a pipe, `head` reading it, both
/// on CPU 0) are both kept pending there, one slot each, so that their switches charge no map;
/// their time still matches the kernel's.
#[test]
fn two_processes_taking_turns_on_one_cpu_are_both_pending_and_match_cpu_stat() {
    let Some(container) = ebpf_container() else {
        return;
    };
    let cgroup = container.cgroup_id();
    let mut program =
        EbpfProgram::load().unwrap_or_else(|e| panic!("eBPF program failed to load: {e}"));
    let _pair = common::ChildGuard(common::spawn_in_cgroup(
        &container.dir,
        "exec taskset -c 0 sh -c 'yes | head -c 100G > /dev/null'",
    ));
    std::thread::sleep(Duration::from_millis(200));
    container.freeze(true);
    program.drain();
    let base = container.usage_usec();
    container.freeze(false);
    // Until they have had 1 s of CPU, looking at CPU 0's slots meanwhile.
    let mut both_pending = 0;
    for _ in 0..600 {
        std::thread::sleep(Duration::from_millis(50));
        let cpu0 = program.cpu_states().unwrap()[0];
        if cpu0
            .slots
            .iter()
            .all(|s| s.key.cgroup_id == cgroup && s.ns > 0)
        {
            both_pending += 1;
        }
        if container.usage_usec() - base >= 1_000_000 {
            break;
        }
    }
    container.freeze(true);
    let drained = program.drain();
    let truth = (container.usage_usec() - base) as f64 / 1e6;
    let _ = fs::write(container.dir.join("cgroup.kill"), "1");
    container.freeze(false);
    let measured = drained_seconds(&drained, |k| k.cgroup_id == cgroup);
    let error = (measured - truth).abs() / truth;
    println!(
        "eBPF {measured:.4} s, cpu.stat {truth:.4} s, error {:.3}%; CPU 0 held both processes pending at {both_pending} looks",
        error * 100.0
    );
    assert!(truth >= 1.0, "the pair got only {truth} s in 30 s");
    assert!(error <= 0.02, "eBPF {measured} s vs cpu.stat {truth} s");
    assert!(both_pending > 0, "CPU 0 never kept both processes pending");
}
