/* The clock behind rate=: the TSC, whose frequency the guest learns once at
 * boot by reading PIT channel 2's count and the TSC together at both ends of
 * about 33 ms. KVM's in-kernel PIT (godwit-vm and QEMU on KVM) and QEMU's own
 * (TCG) both derive the count from the host's clock, so the figure holds even
 * where every guest instruction is emulated and port reads are slow. */
#include "guest.h"

#define PIT_HZ 1193182u
#define PIT_CHANNEL2 0x42
#define PIT_COMMAND 0x43
#define PIT_CH2_LOHI_MODE0 0xB0     /* channel 2, low then high byte, one-shot, binary */
#define PIT_CH2_LATCH 0x80          /* channel 2: latch the count for reading */
#define SPEAKER_PORT 0x61           /* bit 0: channel 2 gate; bit 1: speaker */
#define SPEAKER_GATE2 0x01
#define SPEAKER_DATA 0x02
/* 33.5 ms of PIT ticks: the 16-bit count, started at 0xFFFF, leaves 21 ms
 * for the last samples before it wraps. */
#define CALIBRATION_TICKS 40000u
#define SAMPLES 5
#define SLOWEST_TSC_HZ 1000000u     /* below this the count was not timed */
/* A count that does not move (no PIT: the port reads as an empty bus)
 * would hold the guest forever: give up after 2^33 TSC ticks (4 s at 2 GHz). */
#define GIVE_UP_TSC_TICKS ((uint64_t)1 << 33)
/* Timings that agree to 1/256 are taken as right; a vCPU away for longer
 * than the count's 55 ms period makes it wrap unseen and a timing wrong,
 * and two wrong ones agreeing is most unlikely. */
#define TIMINGS 9
#define AGREEMENT_SHIFT 8

/* A moment seen on both clocks. */
struct clock_sample {
    uint64_t tsc;
    uint16_t count;
    uint64_t width;                 /* TSC ticks the three port accesses took */
};

uint64_t tsc_read(void)
{
    uint32_t low, high;

    __asm__ volatile("rdtsc" : "=a"(low), "=d"(high));
    return ((uint64_t)high << 32) | low;
}

/* -nostdlib leaves out libgcc's 64-bit division: divide in two 32-bit steps.
 * The remainder of the first is below divisor, so divl cannot overflow. */
uint64_t divide_64_by_32(uint64_t dividend, uint32_t divisor)
{
    uint32_t high = (uint32_t)(dividend >> 32), low = (uint32_t)dividend;
    uint32_t quotient_high = high / divisor, remainder = high % divisor, quotient_low;

    __asm__("divl %4" : "=a"(quotient_low), "=d"(remainder)
            : "0"(low), "1"(remainder), "rm"(divisor) : "cc");
    return ((uint64_t)quotient_high << 32) | quotient_low;
}

static uint16_t pit_count(void)
{
    uint8_t low;

    outb(PIT_COMMAND, PIT_CH2_LATCH);
    low = inb(PIT_CHANNEL2);
    return (uint16_t)(low | (inb(PIT_CHANNEL2) << 8));
}

/* The vCPU's thread may lose the host CPU between any two instructions,
 * for milliseconds on a loaded host. Of a few samples, the one whose port
 * reads took least time pins the count to its TSC most closely. */
static struct clock_sample best_sample(void)
{
    struct clock_sample best = { .width = UINT64_MAX };

    for (int i = 0; i < SAMPLES; i++) {
        uint64_t before = tsc_read();
        uint16_t count = pit_count();
        uint64_t width = tsc_read() - before;

        if (width < best.width)
            best = (struct clock_sample){ before + width / 2, count, width };
    }
    return best;
}

/* One timing of CALIBRATION_TICKS; 0 if the count got too far before the
 * last sample (the vCPU was away for 21 ms) or never got there. */
static uint64_t calibrate_once(void)
{
    struct clock_sample first, last;
    uint16_t ticks;

    outb(PIT_COMMAND, PIT_CH2_LOHI_MODE0);
    outb(PIT_CHANNEL2, 0xff);
    outb(PIT_CHANNEL2, 0xff);
    first = best_sample();
    while ((uint16_t)(first.count - pit_count()) < CALIBRATION_TICKS) {
        if (tsc_read() - first.tsc > GIVE_UP_TSC_TICKS)
            return 0;
    }
    last = best_sample();
    ticks = (uint16_t)(first.count - last.count);
    if (ticks < CALIBRATION_TICKS)
        return 0;
    return divide_64_by_32((last.tsc - first.tsc) * PIT_HZ, ticks);
}

static bool agree(uint64_t a, uint64_t b)
{
    uint64_t difference = a > b ? a - b : b - a;

    return a >= SLOWEST_TSC_HZ && b >= SLOWEST_TSC_HZ && difference <= a >> AGREEMENT_SHIFT;
}

uint64_t tsc_calibrate(void)
{
    uint8_t speaker = inb(SPEAKER_PORT);
    uint64_t timings[TIMINGS], hz = 0;

    outb(SPEAKER_PORT, (uint8_t)((speaker & ~SPEAKER_DATA) | SPEAKER_GATE2));
    for (int i = 0; i < TIMINGS && hz == 0; i++) {
        timings[i] = calibrate_once();
        for (int j = 0; j < i && hz == 0; j++) {
            if (agree(timings[i], timings[j]))
                hz = timings[i] / 2 + timings[j] / 2;
        }
    }
    outb(SPEAKER_PORT, speaker);
    return hz;
}
