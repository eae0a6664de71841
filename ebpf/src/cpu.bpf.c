/* kepler-rs CPU accounting: exact on-CPU nanoseconds per (process, cgroup), from sched_switch.
 *
 * At sched_switch `current` is still the outgoing task, so the time since this CPU's previous
 * accounting point belongs to it: its tgid (bpf_get_current_pid_tgid) and its cgroup v2 id
 * (bpf_get_current_cgroup_id). No tracepoint argument and no kernel struct is read, so nothing
 * depends on the kernel's layouts and the loader needs no kernel BTF (parsing it would cost the
 * exporter about 13 MiB of peak RSS). Kernel threads are told apart in user space: they live in
 * the root cgroup, and /proc/<tgid>/stat says PF_KTHREAD. A busy task that is not switched out
 * is flushed from the timer interrupt (hrtimer_expire_entry) at most every FLUSH_NS, so an
 * interval never misses a long run; idle CPUs take no timer for this.
 *
 * Two builds of this one file (ebpf/build.rs, docs/adr/0008): without KEPLER_COUNTERS the
 * time-only program the exporter loads where no hardware counter is available (map values hold
 * the time and comm only); with -DKEPLER_COUNTERS the program that also reads the hardware
 * counters (cycles, instructions, cache misses): user space opens one perf event per CPU per
 * counter and puts the fds into the counter's perf event array; at each accounting point the
 * program reads this CPU's counters (bpf_perf_event_read_value) and charges the increase since the
 * previous point to the same task as the time. `counters_enabled` says which counters have
 * events; it is fixed at load time, so the verifier removes the reads of the others.
 *
 * Time goes into one of two hash maps, chosen by the `generation` global: user space flips it on
 * its monitor interval and drains (reads and deletes) the other map, so its work grows with the
 * processes that ran in the interval, not with all processes on the node. The maps are plain
 * (preallocated) hashes, not LRU: a full map refuses the insert instead of evicting an entry, and
 * the time that found no room is added to the per-CPU `overflow` counter, which user space reads
 * and reports; no time is lost without a trace.
 *
 * Pending pairs (docs/adr/0010): each CPU keeps the two (process, cgroup) pairs it charged last
 * in its per-CPU state. A switch that charges one of them again in the same generation (a
 * process running between idles, threads of one process taking turns, two processes going back
 * and forth) adds the slice there, with no map operation; that pending time goes to the map when
 * a third pair takes the slot, or when user space, after flipping the generation, runs the flush
 * program on every CPU. A slot hit does not read the cgroup id: it only checks that no task
 * changed cgroup since the slot's id was read (`cgroup_moves`, counted at cgroup_attach_task).
 * sched_process_exit records exited processes in `exits`. No event ever wakes user space.
 *
 * Kernel events, in programs of their own so that sched_switch's path stays as it
 * is: softirq_entry counts the softirqs of the NET_TX, NET_RX and BLOCK vectors, and the page
 * cache hooks count page cache hits (writeback_dirty_folio: a folio dirtied in the page cache;
 * the folio_mark_accessed kprobe: a cached folio read, where the kernel has kprobes), each charged
 * to the task running at that moment, per (process, cgroup) in `events_a` / `events_b`, chosen by
 * the same `generation` as the CPU maps and drained with them. */
#include "kepler_bpf.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define FLUSH_NS 10000000ULL /* 10 ms */
#define COUNTERS 3 /* cycles, instructions, cache misses */
#ifdef KEPLER_COUNTERS
#define COUNTERS_IN_VALUE COUNTERS
#else
#define COUNTERS_IN_VALUE 0
#endif
#define CPU_ENTRIES 32768
#define EXIT_ENTRIES 16384
#define EVENT_ENTRIES 16384

/* Keep in sync with CpuKey / CpuTime / CpuValue / Overflow in src/lib.rs. */
struct cpu_key {
	__u32 tgid;
	__u32 _pad;
	__u64 cgroup_id;
};

struct cpu_value {
	__u64 cpu_ns;
#ifdef KEPLER_COUNTERS
	__u64 counters[COUNTERS];
#endif
	char comm[16];
};

struct overflow {
	__u64 cpu_ns;
	__u64 count;
};

#ifdef KEPLER_COUNTERS
/* Bit i: counter i has an event on every CPU in its array. Set by user space at load time. */
const volatile __u32 counters_enabled = 0;

/* One perf event per CPU (index = CPU id) per counter; max_entries 0: the loader sizes them. */
struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} cycles_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} instructions_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} cache_misses_events SEC(".maps");
#endif

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, CPU_ENTRIES);
	__type(key, struct cpu_key);
	__type(value, struct cpu_value);
} cpu_a SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, CPU_ENTRIES);
	__type(key, struct cpu_key);
	__type(value, struct cpu_value);
} cpu_b SEC(".maps");

/* 0: time goes to cpu_a, 1: to cpu_b. Written by user space only, through the `.bss` map (this
 * is the only zero-initialised global, so that map's value is exactly this u32); read here as a
 * plain load, with no map lookup. */
volatile __u32 generation = 0;

/* How many times a task was moved to another cgroup (the cgroup_attach_task tracepoint) since
 * load; starts at 1, so it lives in `.data`, not in `.bss` next to `generation`. A CPU's pending
 * pair is taken as still valid without reading the task's cgroup id (its cost: ADR 0010)
 * only while this has not changed since the pair's cgroup id was read. */
volatile __u64 cgroup_moves = 1;

/* Per CPU: time (and how often) that found no room in a full CPU map. Only ever added to. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct overflow);
} overflow SEC(".maps");

/* A (process, cgroup) pair a CPU charged recently (`key`, tgid 0: none), with the time (and
 * counters) charged to it since by later switches in generation `gen`, not yet in a CPU map;
 * `moves` is cgroup_moves when key.cgroup_id was read. */
struct pending {
	struct cpu_key key;
	__u32 gen;
	__u32 _pad;
	__u64 ns;
	__u64 moves;
#ifdef KEPLER_COUNTERS
	__u64 counters[COUNTERS];
#endif
};

/* Pairs a CPU keeps pending: two, so that a CPU going back and forth between two processes
 * (a process and idle counts as one; a client and its server, an application and its proxy,
 * a process and a kernel worker as two) charges no map at all. */
#define SLOTS 2

/* Per CPU: when time was last accounted on this CPU (bpf_ktime_get_ns), its counters then, and
 * its pending pairs (`last`: the slot charged last). Only sched_switch and the flush program
 * (which user space runs on each CPU through BPF_PROG_TEST_RUN after flipping the generation)
 * write the slots, and neither can interrupt the other, so the fields need no atomics. */
struct cpu_state {
	__u64 ts;
#ifdef KEPLER_COUNTERS
	__u64 counters[COUNTERS];
#endif
	__u32 last;
	__u32 _pad;
	struct pending slot[SLOTS];
};

/* The layouts user space reads (ebpf/src/lib.rs asserts the same numbers): a field moved on
 * either side fails the build. */
#define OFFSET_OF(type, field) __builtin_offsetof(type, field)
_Static_assert(sizeof(struct cpu_key) == 16, "cpu_key: CpuKey is 16 bytes");
_Static_assert(OFFSET_OF(struct cpu_key, cgroup_id) == 8, "cpu_key.cgroup_id at 8");
_Static_assert(OFFSET_OF(struct cpu_value, comm) == 8 + 8 * COUNTERS_IN_VALUE,
	       "cpu_value.comm after cpu_ns (and the counters)");
_Static_assert(sizeof(struct cpu_value) == 24 + 8 * COUNTERS_IN_VALUE,
	       "cpu_value: CpuTime 24 bytes, CpuValue 48");
_Static_assert(sizeof(struct overflow) == 16, "overflow: Overflow is 16 bytes");
_Static_assert(OFFSET_OF(struct pending, gen) == 16, "pending.gen at 16");
_Static_assert(OFFSET_OF(struct pending, ns) == 24, "pending.ns at 24");
_Static_assert(OFFSET_OF(struct pending, moves) == 32, "pending.moves at 32");
_Static_assert(sizeof(struct pending) == 40 + 8 * COUNTERS_IN_VALUE,
	       "pending: Pending 40 bytes, PendingCounted 64");
_Static_assert(OFFSET_OF(struct cpu_state, last) == 8 + 8 * COUNTERS_IN_VALUE,
	       "cpu_state.last after ts (and the counters)");
_Static_assert(OFFSET_OF(struct cpu_state, slot) == 16 + 8 * COUNTERS_IN_VALUE,
	       "cpu_state.slot: CpuState at 16, CpuStateCounted at 40");
_Static_assert(sizeof(struct cpu_state) ==
		       16 + 8 * COUNTERS_IN_VALUE + SLOTS * sizeof(struct pending),
	       "cpu_state: CpuState 96 bytes, CpuStateCounted 168");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cpu_state);
} last_state SEC(".maps");

/* Processes (thread-group leaders) that exited, with the exit time. Drained by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, EXIT_ENTRIES);
	__type(key, __u32);
	__type(value, __u64);
} exits SEC(".maps");

/* Time that found no room: kept per CPU for user space instead of being lost. */
static __always_inline void overflowed(__u64 delta)
{
	__u32 zero = 0;
	struct overflow *o = bpf_map_lookup_elem(&overflow, &zero);
	if (o) {
		o->cpu_ns += delta;
		o->count += 1;
	}
}

/* Adds the time (and counters) to `key`'s entry in `map`, inserting it if new there (with the
 * current task's comm when `comm` is set); what finds no room goes to the overflow counter. */
static __always_inline void add(void *map, struct cpu_key *key, __u64 delta, __u64 *counters,
				int comm)
{
	struct cpu_value *v = bpf_map_lookup_elem(map, key);
	if (!v) {
		struct cpu_value fresh = { .cpu_ns = delta };
#ifdef KEPLER_COUNTERS
		for (int i = 0; i < COUNTERS; i++)
			fresh.counters[i] = counters[i];
#endif
		if (comm)
			bpf_get_current_comm(fresh.comm, sizeof(fresh.comm));
		long err = bpf_map_update_elem(map, key, &fresh, BPF_NOEXIST);
		if (err == 0)
			return;
		/* -EEXIST: another CPU inserted it first; anything else (-E2BIG: full) overflows. */
		v = err == -EEXIST ? bpf_map_lookup_elem(map, key) : 0;
		if (!v) {
			overflowed(delta);
			return;
		}
	}
	__sync_fetch_and_add(&v->cpu_ns, delta);
#ifdef KEPLER_COUNTERS
	if (counters_enabled) {
		for (int i = 0; i < COUNTERS; i++)
			if (counters[i])
				__sync_fetch_and_add(&v->counters[i], counters[i]);
	}
#endif
}

/* Moves a slot's pending time (and counters) into the map of its generation. The pair's entry
 * is normally there already: its first slice in the generation was charged to the map. */
static __always_inline void flush(struct pending *p)
{
	if (p->key.tgid == 0 || p->ns == 0)
		return;
	__u64 *counters = 0;
#ifdef KEPLER_COUNTERS
	counters = p->counters;
#endif
	if (p->gen)
		add(&cpu_b, &p->key, p->ns, counters, 0);
	else
		add(&cpu_a, &p->key, p->ns, counters, 0);
	p->ns = 0;
#ifdef KEPLER_COUNTERS
	for (int i = 0; i < COUNTERS; i++)
		p->counters[i] = 0;
#endif
}

/* Adds a slice to a slot's pending time (and counters). */
static __always_inline void pend(struct pending *p, __u64 delta, __u64 *counters)
{
	p->ns += delta;
#ifdef KEPLER_COUNTERS
	for (int i = 0; i < COUNTERS; i++)
		p->counters[i] += counters[i];
#endif
}

/* Whether a slot holds this process's pair of this generation, its cgroup id read since the
 * last cgroup move (so that it is still the task's cgroup). */
static __always_inline int holds(struct pending *p, __u32 tgid, __u32 gen, __u64 moves)
{
	return p->key.tgid == tgid && p->gen == gen && p->moves == moves;
}

#ifdef KEPLER_COUNTERS
/* The increase of one counter on this CPU since `*last`, which it then updates; 0 when the
 * event cannot be read (or on the first read). */
static __always_inline __u64 counter_delta(void *events, __u64 *last)
{
	struct bpf_perf_event_value value = {};
	if (bpf_perf_event_read_value(events, BPF_F_CURRENT_CPU, &value, sizeof(value)) != 0)
		return 0;
	__u64 prev = *last;
	*last = value.counter;
	return prev && value.counter > prev ? value.counter - prev : 0;
}
#endif

/* Charges the time (and counters) since this CPU's last accounting point to the current task;
 * with `min_ns`, only if at least that much has passed. */
static __always_inline void account(__u64 min_ns)
{
	__u32 zero = 0;
	struct cpu_state *st = bpf_map_lookup_elem(&last_state, &zero);
	if (!st)
		return;
	__u64 now = bpf_ktime_get_ns();
	__u64 prev = st->ts;
	if (min_ns && now - prev < min_ns)
		return;
	st->ts = now;
#ifdef KEPLER_COUNTERS
	__u64 counters[COUNTERS] = {};
	if (counters_enabled & 1)
		counters[0] = counter_delta(&cycles_events, &st->counters[0]);
	if (counters_enabled & 2)
		counters[1] = counter_delta(&instructions_events, &st->counters[1]);
	if (counters_enabled & 4)
		counters[2] = counter_delta(&cache_misses_events, &st->counters[2]);
#endif
	if (prev == 0 || now <= prev)
		return;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (tgid == 0) /* the idle task */
		return;
	__u32 gen = generation;
	__u64 delta = now - prev;
	__u64 *cnt = 0;
#ifdef KEPLER_COUNTERS
	cnt = counters;
#endif
	/* Read before the cgroup id: a move after this read changes cgroup_moves, so a pair
	 * stored with this value never outlives a move it did not see. */
	__u64 moves = cgroup_moves;
	__u32 last = st->last & (SLOTS - 1);
	if (!min_ns) {
		/* A process this CPU charged last or the time before, in the same generation, and
		 * no task changed cgroup since its cgroup id was read: the same pair, kept in the
		 * per-CPU state, with no map operation and no cgroup lookup. */
		struct pending *p = &st->slot[last];
		if (holds(p, tgid, gen, moves)) {
			pend(p, delta, cnt);
			return;
		}
		p = &st->slot[last ^ 1];
		if (holds(p, tgid, gen, moves)) {
			pend(p, delta, cnt);
			st->last = last ^ 1;
			return;
		}
	}
	struct cpu_key key = { .tgid = tgid, .cgroup_id = bpf_get_current_cgroup_id() };
	if (!min_ns) {
		/* The same pair after all (some task moved, not necessarily this one). */
		for (__u32 i = 0; i < SLOTS; i++) {
			struct pending *p = &st->slot[i];
			if (p->key.tgid == tgid && p->key.cgroup_id == key.cgroup_id &&
			    p->gen == gen) {
				p->moves = moves;
				pend(p, delta, cnt);
				st->last = i;
				return;
			}
		}
		/* Another pair: it takes the slot not charged last, whose pending time goes to
		 * its map; this slice goes to the map directly (inserting the pair with its comm
		 * if new), and the pair's next slices stay pending. */
		struct pending *p = &st->slot[last ^ 1];
		flush(p);
		p->key = key;
		p->gen = gen;
		p->moves = moves;
		st->last = last ^ 1;
	}
	/* The timer hook (min_ns) can run in softirq context with interrupts on, where the flush
	 * program could interrupt it: it leaves the pending fields alone and charges the map. */
	if (gen)
		add(&cpu_b, &key, delta, cnt, 1);
	else
		add(&cpu_a, &key, delta, cnt, 1);
}

SEC("raw_tp/sched_switch")
int kepler_sched_switch(struct bpf_raw_tracepoint_args *ctx)
{
	account(0);
	return 0;
}

SEC("raw_tp/hrtimer_expire_entry")
int kepler_timer_flush(struct bpf_raw_tracepoint_args *ctx)
{
	account(FLUSH_NS);
	return 0;
}

SEC("raw_tp/sched_process_exit")
int kepler_process_exit(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	if (tgid == 0 || (__u32)pid_tgid != tgid)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	bpf_map_update_elem(&exits, &tgid, &now, BPF_ANY);
	return 0;
}

/* A task moved to another cgroup (written to cgroup.procs or cgroup.threads, in any
 * hierarchy): the pending pairs' cgroup ids are read again at their CPUs' next switch. */
SEC("raw_tp/cgroup_attach_task")
int kepler_cgroup_move(struct bpf_raw_tracepoint_args *ctx)
{
	__sync_fetch_and_add(&cgroup_moves, 1);
	return 0;
}

/* Not attached: user space runs it on every CPU (BPF_PROG_TEST_RUN with BPF_F_TEST_RUN_ON_CPU:
 * in an IPI on another CPU, with preemption off on the caller's, so never inside a sched_switch
 * run) right after flipping the generation, so that the time pending on each CPU is in the map
 * it is about to drain. A pair that ran since the flip stays pending. */
SEC("raw_tp/kepler_flush")
int kepler_flush_pending(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 zero = 0;
	struct cpu_state *st = bpf_map_lookup_elem(&last_state, &zero);
	if (!st)
		return 0;
	__u32 gen = generation;
	for (__u32 i = 0; i < SLOTS; i++) {
		struct pending *p = &st->slot[i];
		if (p->gen != gen) {
			flush(p);
			p->key.tgid = 0;
		}
	}
	return 0;
}

/* Kernel events per (process, cgroup), in the order of EventCounts in src/lib.rs. */
#define EVENT_NET_TX_IRQ 0
#define EVENT_NET_RX_IRQ 1
#define EVENT_BLOCK_IRQ 2
#define EVENT_PAGE_CACHE_HIT 3
#define EVENTS 4

/* Softirq vectors (include/linux/interrupt.h: HI, TIMER, NET_TX, NET_RX, BLOCK, ...). */
#define NET_TX_SOFTIRQ 2
#define NET_RX_SOFTIRQ 3
#define BLOCK_SOFTIRQ 4

/* Keep in sync with EventCounts in src/lib.rs. */
struct event_value {
	__u64 count[EVENTS];
};
_Static_assert(sizeof(struct event_value) == 32, "event_value: EventCounts is 32 bytes");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EVENT_ENTRIES);
	__type(key, struct cpu_key);
	__type(value, struct event_value);
} events_a SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EVENT_ENTRIES);
	__type(key, struct cpu_key);
	__type(value, struct event_value);
} events_b SEC(".maps");

/* Per CPU: events that found no room in a full event map. Only ever added to. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} events_overflow SEC(".maps");

/* Adds one event of kind `event` to `key`'s entry in `map`, inserting it if new. */
static __always_inline void add_event(void *map, struct cpu_key *key, __u32 event)
{
	struct event_value *v = bpf_map_lookup_elem(map, key);
	if (!v) {
		struct event_value fresh = {};
		fresh.count[event] = 1;
		long err = bpf_map_update_elem(map, key, &fresh, BPF_NOEXIST);
		if (err == 0)
			return;
		v = err == -EEXIST ? bpf_map_lookup_elem(map, key) : 0;
		if (!v) {
			__u32 zero = 0;
			__u64 *o = bpf_map_lookup_elem(&events_overflow, &zero);
			if (o)
				*o += 1;
			return;
		}
	}
	__sync_fetch_and_add(&v->count[event], 1);
}

/* Charges one event to the current task's (process, cgroup) pair; none to the idle task. */
static __always_inline void count_event(__u32 event)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (tgid == 0)
		return;
	struct cpu_key key = { .tgid = tgid, .cgroup_id = bpf_get_current_cgroup_id() };
	if (generation)
		add_event(&events_b, &key, event);
	else
		add_event(&events_a, &key, event);
}

/* softirq_entry(unsigned int vec_nr): the softirq runs on top of whichever task was running
 * (or in ksoftirqd), and is charged to it, as classic Kepler does. */
SEC("raw_tp/softirq_entry")
int kepler_softirq_entry(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 vec = ctx->args[0];
	if (vec == NET_TX_SOFTIRQ)
		count_event(EVENT_NET_TX_IRQ);
	else if (vec == NET_RX_SOFTIRQ)
		count_event(EVENT_NET_RX_IRQ);
	else if (vec == BLOCK_SOFTIRQ)
		count_event(EVENT_BLOCK_IRQ);
	return 0;
}

/* writeback_dirty_folio(folio, mapping): a write landed in the page cache. */
SEC("raw_tp/writeback_dirty_folio")
int kepler_page_cache_write(struct bpf_raw_tracepoint_args *ctx)
{
	count_event(EVENT_PAGE_CACHE_HIT);
	return 0;
}

/* folio_mark_accessed(folio): a read found the folio in the page cache (filemap_read calls it
 * for every folio it copies from). Needs kprobes (CONFIG_KPROBES); no tracepoint marks reads. */
SEC("kprobe/folio_mark_accessed")
int kepler_page_cache_read(void *ctx)
{
	count_event(EVENT_PAGE_CACHE_HIT);
	return 0;
}

/* Not attached by the exporter: the benchmark attaches it next to kepler_sched_switch to measure
 * what the kernel's BPF statistics cost by themselves (their floor on this machine). */
SEC("raw_tp/sched_switch")
int kepler_calibration_noop(struct bpf_raw_tracepoint_args *ctx)
{
	return 0;
}
