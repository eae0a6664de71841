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
 *   running <gpu> <pid> [<gi> <ci>]   a running compute process of GPU <gpu> (index); with
 *                               <gi> <ci>, it runs in that MIG instance (GPU instance id,
 *                               compute instance id)
 *   mig <gpu> <current> <pending>       GPU <gpu>'s MIG mode (1 enabled, 0 disabled); a GPU
 *                               without a `mig` line has no MIG (nvmlDeviceGetMigMode answers
 *                               NOT_SUPPORTED)
 *   migdev <gpu> <index> <gi> <ci> <uuid> <name> <sm_count> <gi_slices> <ci_slices>
 *                               a MIG device of GPU <gpu> at <index> (0..6) of its MIG
 *                               device handles, listed while the GPU's current MIG mode is 1
 *
 * One `gpu` line per device, index in file order; `_` in <name> reads as a space. A negative
 * <energy_mj>, <power_mw> or <util_pct> makes that call return the NVML error code it negates
 * (-3: NVML_ERROR_NOT_SUPPORTED, -4: NO_PERMISSION, -15: GPU_IS_LOST, ...). A non-zero
 * <status> makes every call on the device, the handle lookup included, return <status> (a GPU
 * that vanished: 15). A GPU without `proc` samples newer than the caller's last seen
 * timestamp answers NVML_ERROR_NOT_FOUND for them, as NVML does.
 *
 * MIG, as NVML: nvmlDeviceGetMaxMigDeviceCount is 7 on a GPU whose current MIG mode is on (0
 * otherwise), and nvmlDeviceGetMigDeviceHandleByIndex answers NOT_FOUND at an index with no MIG
 * device. A MIG device handle answers its own UUID ("MIG-..."), name, GPU and compute instance
 * ids, attributes (SM count, slice counts) and running compute processes (those whose `running`
 * line names its instance); a parent handle lists every running process with its instance ids.
 * Energy, power, utilisation and process utilisation samples are per GPU only: on a MIG handle
 * they answer NVML_ERROR_NOT_SUPPORTED, as NVML does.
 *
 * Build: cc -shared -fPIC -o libnvidia-ml.so.1 fake_nvml.c
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
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_UNKNOWN 999
#define NVML_ERROR_NOT_FOUND 6
#define MAX_GPUS 16
#define MAX_PROCS 64
#define MAX_MIGS 64
#define MAX_MIG_PER_GPU 7
#define NO_INSTANCE 0xFFFFFFFFu

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

typedef struct {
    unsigned int multiprocessorCount;
    unsigned int sharedCopyEngineCount;
    unsigned int sharedDecoderCount;
    unsigned int sharedEncoderCount;
    unsigned int sharedJpegCount;
    unsigned int sharedOfaCount;
    unsigned int gpuInstanceSliceCount;
    unsigned int computeInstanceSliceCount;
    unsigned long long memorySizeMB;
} nvmlDeviceAttributes_t;

struct proc {
    int running; /* 1: a `running` line, 0: a `proc` sample */
    unsigned int gpu;
    unsigned int pid;
    unsigned long long timestamp;
    unsigned int sm;
    unsigned int mem;
    unsigned int gi; /* NO_INSTANCE outside MIG */
    unsigned int ci;
};

struct mig {
    unsigned int gpu;
    unsigned int index;
    unsigned int gi;
    unsigned int ci;
    char uuid[96];
    char name[96];
    unsigned int sms;
    unsigned int gi_slices;
    unsigned int ci_slices;
};

struct gpu {
    char uuid[96];
    char name[96];
    long long energy_mj;
    long long power_mw;
    long long util_pct;
    int status;
    int mig_mode; /* -1: no MIG; else 0/1 */
    int mig_pending;
};

struct state {
    int init;
    char driver[80];
    int count;
    struct gpu gpus[MAX_GPUS];
    int procs;
    struct proc proc[MAX_PROCS];
    int migs;
    struct mig mig[MAX_MIGS];
    /* `mig` lines, applied to their GPUs once all are read */
    int modes;
    unsigned int mode_gpu[MAX_GPUS];
    int mode_current[MAX_GPUS];
    int mode_pending[MAX_GPUS];
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
        if (s->migs < MAX_MIGS) {
            struct mig *m = &s->mig[s->migs];
            if (sscanf(line, "migdev %u %u %u %u %95s %95s %u %u %u", &m->gpu, &m->index, &m->gi,
                       &m->ci, m->uuid, m->name, &m->sms, &m->gi_slices, &m->ci_slices) == 9) {
                for (char *c = m->name; *c; c++)
                    if (*c == '_')
                        *c = ' ';
                s->migs++;
                continue;
            }
        }
        if (s->modes < MAX_GPUS &&
            sscanf(line, "mig %u %d %d", &s->mode_gpu[s->modes], &s->mode_current[s->modes],
                   &s->mode_pending[s->modes]) == 3) {
            s->modes++;
            continue;
        }
        if (s->procs < MAX_PROCS) {
            struct proc *p = &s->proc[s->procs];
            if (sscanf(line, "proc %u %u %llu %u %u", &p->gpu, &p->pid, &p->timestamp, &p->sm,
                       &p->mem) == 5) {
                p->running = 0;
                s->procs++;
                continue;
            }
            int n = sscanf(line, "running %u %u %u %u", &p->gpu, &p->pid, &p->gi, &p->ci);
            if (n == 2 || n == 4) {
                if (n == 2)
                    p->gi = p->ci = NO_INSTANCE;
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
                g->mig_mode = -1;
                s->count++;
            }
        }
    }
    fclose(f);
    for (int i = 0; i < s->modes; i++)
        if (s->mode_gpu[i] < (unsigned int)s->count) {
            s->gpus[s->mode_gpu[i]].mig_mode = s->mode_current[i];
            s->gpus[s->mode_gpu[i]].mig_pending = s->mode_pending[i];
        }
    return 0;
}

/* Handles: a GPU is its index + 1; a MIG device is that | (its index among the GPU's MIG device
 * handles + 1) << 8. */
static nvmlDevice_t mig_handle(unsigned int gpu, unsigned int index) {
    return (nvmlDevice_t)(long)((gpu + 1) | ((index + 1) << 8));
}

/* The GPU of a handle and, for a MIG device handle, the MIG device (else NULL); or an error
 * code (a MIG device only while its GPU's current MIG mode is on). */
static nvmlReturn_t resolve(nvmlDevice_t handle, struct state *s, struct gpu **g,
                            struct mig **m) {
    if (!initialised)
        return NVML_ERROR_UNINITIALIZED;
    if (load(s) != 0)
        return NVML_ERROR_UNKNOWN;
    long h = (long)handle;
    long i = (h & 0xff) - 1, mi = (h >> 8) - 1;
    if (i < 0 || i >= s->count || mi >= MAX_MIG_PER_GPU)
        return NVML_ERROR_INVALID_ARGUMENT;
    *g = &s->gpus[i];
    *m = NULL;
    if (mi >= 0) {
        for (int k = 0; k < s->migs; k++)
            if (s->mig[k].gpu == (unsigned int)i && s->mig[k].index == (unsigned int)mi)
                *m = &s->mig[k];
        if (!*m || (*g)->mig_mode != 1)
            return NVML_ERROR_INVALID_ARGUMENT;
    }
    return (*g)->status;
}

/* The GPU of a handle, for the calls NVML answers per GPU only: NOT_SUPPORTED on a MIG device
 * handle. */
static nvmlReturn_t device(nvmlDevice_t handle, struct state *s, struct gpu **g) {
    struct mig *m;
    nvmlReturn_t r = resolve(handle, s, g, &m);
    if (r == NVML_SUCCESS && m)
        return NVML_ERROR_NOT_SUPPORTED;
    return r;
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
    struct mig *m;
    nvmlReturn_t r = resolve(handle, &s, &g, &m);
    return r != NVML_SUCCESS ? r : copy(name, length, m ? m->name : g->name);
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t handle, char *uuid, unsigned int length) {
    struct state s;
    struct gpu *g;
    struct mig *m;
    nvmlReturn_t r = resolve(handle, &s, &g, &m);
    return r != NVML_SUCCESS ? r : copy(uuid, length, m ? m->uuid : g->uuid);
}

nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t handle, unsigned int *current,
                                  unsigned int *pending) {
    struct state s;
    struct gpu *g;
    nvmlReturn_t r = device(handle, &s, &g);
    if (r != NVML_SUCCESS)
        return r;
    if (g->mig_mode < 0)
        return NVML_ERROR_NOT_SUPPORTED;
    *current = (unsigned int)g->mig_mode;
    *pending = (unsigned int)g->mig_pending;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t handle, unsigned int *count) {
    struct state s;
    struct gpu *g;
    nvmlReturn_t r = device(handle, &s, &g);
    if (r != NVML_SUCCESS)
        return r;
    *count = g->mig_mode == 1 ? MAX_MIG_PER_GPU : 0;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t handle, unsigned int index,
                                                 nvmlDevice_t *migDevice) {
    struct state s;
    struct gpu *g;
    nvmlReturn_t r = device(handle, &s, &g);
    if (r != NVML_SUCCESS)
        return r;
    if (g->mig_mode != 1)
        return NVML_ERROR_NOT_SUPPORTED;
    if (index >= MAX_MIG_PER_GPU)
        return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int gpu = (unsigned int)((long)handle - 1);
    for (int k = 0; k < s.migs; k++)
        if (s.mig[k].gpu == gpu && s.mig[k].index == index) {
            *migDevice = mig_handle(gpu, index);
            return NVML_SUCCESS;
        }
    return NVML_ERROR_NOT_FOUND;
}

nvmlReturn_t nvmlDeviceIsMigDeviceHandle(nvmlDevice_t handle, unsigned int *isMigDevice) {
    struct state s;
    struct gpu *g;
    struct mig *m;
    nvmlReturn_t r = resolve(handle, &s, &g, &m);
    if (r != NVML_SUCCESS)
        return r;
    *isMigDevice = m != NULL;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetDeviceHandleFromMigDeviceHandle(nvmlDevice_t migDevice,
                                                          nvmlDevice_t *device) {
    struct state s;
    struct gpu *g;
    struct mig *m;
    nvmlReturn_t r = resolve(migDevice, &s, &g, &m);
    if (r != NVML_SUCCESS)
        return r;
    if (!m)
        return NVML_ERROR_INVALID_ARGUMENT;
    *device = (nvmlDevice_t)(long)(m->gpu + 1);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t handle, unsigned int *id) {
    struct state s;
    struct gpu *g;
    struct mig *m;
    nvmlReturn_t r = resolve(handle, &s, &g, &m);
    if (r != NVML_SUCCESS)
        return r;
    if (!m)
        return NVML_ERROR_NOT_SUPPORTED;
    *id = m->gi;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t handle, unsigned int *id) {
    struct state s;
    struct gpu *g;
    struct mig *m;
    nvmlReturn_t r = resolve(handle, &s, &g, &m);
    if (r != NVML_SUCCESS)
        return r;
    if (!m)
        return NVML_ERROR_NOT_SUPPORTED;
    *id = m->ci;
    return NVML_SUCCESS;
}

/* Attributes of MIG devices only (the exporter asks no others). */
nvmlReturn_t nvmlDeviceGetAttributes_v2(nvmlDevice_t handle, nvmlDeviceAttributes_t *attributes) {
    struct state s;
    struct gpu *g;
    struct mig *m;
    nvmlReturn_t r = resolve(handle, &s, &g, &m);
    if (r != NVML_SUCCESS)
        return r;
    if (!m)
        return NVML_ERROR_NOT_SUPPORTED;
    memset(attributes, 0, sizeof(*attributes));
    attributes->multiprocessorCount = m->sms;
    attributes->gpuInstanceSliceCount = m->gi_slices;
    attributes->computeInstanceSliceCount = m->ci_slices;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetAttributes(nvmlDevice_t handle, nvmlDeviceAttributes_t *attributes) {
    return nvmlDeviceGetAttributes_v2(handle, attributes);
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
    struct mig *m;
    nvmlReturn_t r = resolve(handle, &s, &g, &m);
    if (r != NVML_SUCCESS)
        return r;
    unsigned int gpu = (unsigned int)(((long)handle & 0xff) - 1), n = 0;
    for (int i = 0; i < s.procs; i++) {
        struct proc *p = &s.proc[i];
        if (!p->running || p->gpu != gpu)
            continue;
        if (m && (p->gi != m->gi || p->ci != m->ci))
            continue;
        if (infos && n < *count) {
            infos[n].pid = p->pid;
            infos[n].usedGpuMemory = 0;
            infos[n].gpuInstanceId = p->gi;
            infos[n].computeInstanceId = p->ci;
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
