/*
 * A fake NVML (libnvidia-ml.so.1) for the GPU tests: the entry points the exporter calls
 * through nvml-wrapper, answering from a state file the test rewrites whenever it likes.
 *
 * The file's path is in $FAKE_NVML_STATE; it is read afresh on every call. Lines:
 *
 *   init <code>                 nvmlInit_v2 returns <code> (default 0, success)
 *   driver <version>            nvmlSystemGetDriverVersion
 *   gpu <uuid> <name> <energy_mj> <power_mw> <util_pct> <status>
 *   proc <gpu> <pid> <timestamp_us> <sm_pct> <mem_pct>   a process utilisation sample
 *   running <gpu> <pid>         a running compute process of GPU <gpu> (index)
 *
 * One `gpu` line per device, index in file order; `_` in <name> reads as a space. A negative
 * <energy_mj>, <power_mw> or <util_pct> makes that call return the NVML error code it negates
 * (-3: NVML_ERROR_NOT_SUPPORTED, -4: NO_PERMISSION, -15: GPU_IS_LOST, ...). A non-zero
 * <status> makes every call on the device, the handle lookup included, return <status> (a GPU
 * that vanished: 15). A GPU without `proc` samples newer than the caller's last seen
 * timestamp answers NVML_ERROR_NOT_FOUND for them, as NVML does. Build: cc -shared -fPIC -o libnvidia-ml.so.1 fake_nvml.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int nvmlReturn_t;
typedef struct nvmlDevice_st *nvmlDevice_t;
typedef struct {
    unsigned int gpu;
    unsigned int memory;
} nvmlUtilization_t;

#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_UNKNOWN 999
#define NVML_ERROR_NOT_FOUND 6
#define MAX_GPUS 16
#define MAX_PROCS 64

typedef struct {
    unsigned int pid;
    unsigned long long timeStamp;
    unsigned int smUtil;
    unsigned int memUtil;
    unsigned int encUtil;
    unsigned int decUtil;
} nvmlProcessUtilizationSample_t;

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlProcessInfo_t;

struct proc {
    int running; /* 1: a `running` line, 0: a `proc` sample */
    unsigned int gpu;
    unsigned int pid;
    unsigned long long timestamp;
    unsigned int sm;
    unsigned int mem;
};

struct gpu {
    char uuid[96];
    char name[96];
    long long energy_mj;
    long long power_mw;
    long long util_pct;
    int status;
};

struct state {
    int init;
    char driver[80];
    int count;
    struct gpu gpus[MAX_GPUS];
    int procs;
    struct proc proc[MAX_PROCS];
};

static int initialised;

static int load(struct state *s) {
    memset(s, 0, sizeof(*s));
    strcpy(s->driver, "0.0");
    const char *path = getenv("FAKE_NVML_STATE");
    if (!path)
        return -1;
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "init %d", &s->init) == 1)
            continue;
        if (sscanf(line, "driver %79s", s->driver) == 1)
            continue;
        if (s->procs < MAX_PROCS) {
            struct proc *p = &s->proc[s->procs];
            if (sscanf(line, "proc %u %u %llu %u %u", &p->gpu, &p->pid, &p->timestamp, &p->sm,
                       &p->mem) == 5) {
                p->running = 0;
                s->procs++;
                continue;
            }
            if (sscanf(line, "running %u %u", &p->gpu, &p->pid) == 2) {
                p->running = 1;
                s->procs++;
                continue;
            }
        }
        if (s->count < MAX_GPUS) {
            struct gpu *g = &s->gpus[s->count];
            if (sscanf(line, "gpu %95s %95s %lld %lld %lld %d", g->uuid, g->name, &g->energy_mj,
                       &g->power_mw, &g->util_pct, &g->status) == 6) {
                for (char *c = g->name; *c; c++)
                    if (*c == '_')
                        *c = ' ';
                s->count++;
            }
        }
    }
    fclose(f);
    return 0;
}

/* The device of a handle (index + 1), or an error code. */
static nvmlReturn_t device(nvmlDevice_t handle, struct state *s, struct gpu **g) {
    if (!initialised)
        return NVML_ERROR_UNINITIALIZED;
    if (load(s) != 0)
        return NVML_ERROR_UNKNOWN;
    long i = (long)handle - 1;
    if (i < 0 || i >= s->count)
        return NVML_ERROR_INVALID_ARGUMENT;
    *g = &s->gpus[i];
    return (*g)->status;
}

static nvmlReturn_t copy(char *dst, unsigned int length, const char *src) {
    if (strlen(src) + 1 > length)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    strcpy(dst, src);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlInit_v2(void) {
    struct state s;
    if (load(&s) != 0)
        return NVML_ERROR_UNKNOWN;
    if (s.init != 0)
        return s.init;
    initialised = 1;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlInit(void) { return nvmlInit_v2(); }

nvmlReturn_t nvmlShutdown(void) {
    initialised = 0;
    return NVML_SUCCESS;
}

const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case 0: return "Success";
    case 1: return "Uninitialized";
    case 2: return "Invalid Argument";
    case 3: return "Not Supported";
    case 4: return "Insufficient Permissions";
    case 15: return "GPU is lost";
    default: return "Unknown Error";
    }
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    struct state s;
    if (!initialised)
        return NVML_ERROR_UNINITIALIZED;
    if (load(&s) != 0)
        return NVML_ERROR_UNKNOWN;
    return copy(version, length, s.driver);
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    struct state s;
    if (!initialised)
        return NVML_ERROR_UNINITIALIZED;
    if (load(&s) != 0)
        return NVML_ERROR_UNKNOWN;
    *count = (unsigned int)s.count;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *handle) {
    struct state s;
    struct gpu *g;
    nvmlReturn_t r = device((nvmlDevice_t)(long)(index + 1), &s, &g);
    if (r == NVML_SUCCESS)
        *handle = (nvmlDevice_t)(long)(index + 1);
    return r;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t handle, char *name, unsigned int length) {
    struct state s;
    struct gpu *g;
    nvmlReturn_t r = device(handle, &s, &g);
    return r != NVML_SUCCESS ? r : copy(name, length, g->name);
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t handle, char *uuid, unsigned int length) {
    struct state s;
    struct gpu *g;
    nvmlReturn_t r = device(handle, &s, &g);
    return r != NVML_SUCCESS ? r : copy(uuid, length, g->uuid);
}

nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t handle, unsigned long long *energy) {
    struct state s;
    struct gpu *g;
    nvmlReturn_t r = device(handle, &s, &g);
    if (r != NVML_SUCCESS)
        return r;
    if (g->energy_mj < 0)
        return (nvmlReturn_t)-g->energy_mj;
    *energy = (unsigned long long)g->energy_mj;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t handle, unsigned int *power) {
    struct state s;
    struct gpu *g;
    nvmlReturn_t r = device(handle, &s, &g);
    if (r != NVML_SUCCESS)
        return r;
    if (g->power_mw < 0)
        return (nvmlReturn_t)-g->power_mw;
    *power = (unsigned int)g->power_mw;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t handle, nvmlUtilization_t *utilization) {
    struct state s;
    struct gpu *g;
    nvmlReturn_t r = device(handle, &s, &g);
    if (r != NVML_SUCCESS)
        return r;
    if (g->util_pct < 0)
        return (nvmlReturn_t)-g->util_pct;
    utilization->gpu = (unsigned int)g->util_pct;
    utilization->memory = 0;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t handle,
                                             nvmlProcessUtilizationSample_t *utilization,
                                             unsigned int *count,
                                             unsigned long long lastSeenTimeStamp) {
    struct state s;
    struct gpu *g;
    nvmlReturn_t r = device(handle, &s, &g);
    if (r != NVML_SUCCESS)
        return r;
    unsigned int gpu = (unsigned int)((long)handle - 1), n = 0;
    for (int i = 0; i < s.procs; i++) {
        struct proc *p = &s.proc[i];
        if (p->running || p->gpu != gpu || p->timestamp <= lastSeenTimeStamp)
            continue;
        if (utilization && n < *count) {
            utilization[n].pid = p->pid;
            utilization[n].timeStamp = p->timestamp;
            utilization[n].smUtil = p->sm;
            utilization[n].memUtil = p->mem;
            utilization[n].encUtil = 0;
            utilization[n].decUtil = 0;
        }
        n++;
    }
    if (n == 0)
        return NVML_ERROR_NOT_FOUND;
    if (!utilization || n > *count) {
        *count = n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    *count = n;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t handle, unsigned int *count,
                                                     nvmlProcessInfo_t *infos) {
    struct state s;
    struct gpu *g;
    nvmlReturn_t r = device(handle, &s, &g);
    if (r != NVML_SUCCESS)
        return r;
    unsigned int gpu = (unsigned int)((long)handle - 1), n = 0;
    for (int i = 0; i < s.procs; i++) {
        struct proc *p = &s.proc[i];
        if (!p->running || p->gpu != gpu)
            continue;
        if (infos && n < *count) {
            infos[n].pid = p->pid;
            infos[n].usedGpuMemory = 0;
            infos[n].gpuInstanceId = 0xFFFFFFFF;
            infos[n].computeInstanceId = 0xFFFFFFFF;
        }
        n++;
    }
    if (n > *count) {
        *count = n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    *count = n;
    return NVML_SUCCESS;
}
