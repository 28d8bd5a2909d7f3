// Accuracy of spikecore::sc_expf (include/spikecore_math.h) against exp() in double, rounded to
// float, over float32 inputs whose result is a normal float.
//
//   g++ -O2 -ffp-contract=off -Iinclude tests/native/check_exp.cpp -o check_exp
//   ./check_exp 1        # every float32 bit pattern (about a minute)
//   ./check_exp 4099     # every 4099th pattern (what tests/test_exp_native.py runs)
//
// Prints the number of inputs checked and the worst error in units in the last place; exits 1
// if any input is off by more than 1 ulp or a special value is wrong.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spikecore_math.h"

static int64_t ulp_distance(float a, float b) {
    int32_t ia, ib;
    memcpy(&ia, &a, sizeof ia);
    memcpy(&ib, &b, sizeof ib);
    return llabs((int64_t)ia - (int64_t)ib);
}

int main(int argc, char** argv) {
    const uint64_t stride = argc > 1 ? strtoull(argv[1], NULL, 10) : 4099;
    uint64_t checked = 0;
    int64_t worst = 0;
    float worst_x = 0.0f;
    for (uint64_t u = 0; u <= 0xffffffffull; u += stride) {
        const uint32_t bits = (uint32_t)u;
        float x;
        memcpy(&x, &bits, sizeof x);
        if (!(x >= -87.33654f && x <= 88.72283f)) continue;  // results outside the normal range
        const int64_t d = ulp_distance(spikecore::sc_expf(x), (float)exp((double)x));
        ++checked;
        if (d > worst) {
            worst = d;
            worst_x = x;
        }
    }
    int bad_special = spikecore::sc_expf(INFINITY) != INFINITY || spikecore::sc_expf(-INFINITY) != 0.0f ||
                      !isnan(spikecore::sc_expf(NAN)) || spikecore::sc_expf(100.0f) != INFINITY ||
                      spikecore::sc_expf(-100.0f) != 0.0f || spikecore::sc_expf(0.0f) != 1.0f;
    printf("checked %llu inputs, worst error %lld ulp (at x = %.9g), special values %s\n",
           (unsigned long long)checked, (long long)worst, worst_x, bad_special ? "WRONG" : "ok");
    return worst > 1 || bad_special ? 1 : 0;
}
