/* Minimal hand-written BPF definitions for kepler-rs: no vmlinux.h, no libbpf headers, so the
 * build does not depend on the build machine's kernel BTF or on libbpf-dev. Only what
 * cpu.bpf.c uses is declared here. Helper ids are the kernel's stable UAPI numbers
 * (include/uapi/linux/bpf.h, enum bpf_func_id). */
#ifndef KEPLER_BPF_H
#define KEPLER_BPF_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed long long __s64;

#define SEC(name) __attribute__((section(name), used))
#define __always_inline inline __attribute__((always_inline))

/* BTF-defined maps, as libbpf and aya read them. */
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name

enum {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERF_EVENT_ARRAY = 4,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
};

#define EEXIST 17 /* errno: the key exists (BPF_NOEXIST) */

enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
};

/* bpf_perf_event_read_value: the event on the CPU the program runs on. */
#define BPF_F_CURRENT_CPU 0xffffffffULL

struct bpf_perf_event_value {
	__u64 counter;
	__u64 enabled;
	__u64 running;
};

/* The context of raw tracepoint programs: the tracepoint's arguments. */
struct bpf_raw_tracepoint_args {
	__u64 args[0];
};

/* Helpers, by their UAPI ids. */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value,
				   __u64 flags) = (void *)2;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static __u64 (*bpf_get_current_pid_tgid)(void) = (void *)14;
static long (*bpf_get_current_comm)(void *buf, __u32 size) = (void *)16;
static long (*bpf_perf_event_read_value)(void *map, __u64 flags, struct bpf_perf_event_value *buf,
					 __u32 buf_size) = (void *)55;
static __u64 (*bpf_get_current_cgroup_id)(void) = (void *)80;

#endif
