// The comdat-obj fixture: a relocatable object full of COMDAT groups shared with comdat_main.cpp.
#include "comdat.hpp"

int comdat_entry(int n) {
    std::vector<int> values;
    for (int i = 1; i <= n; ++i) {
        values.push_back(i);
    }
    const Square square(n);
    return sum_of(values) + static_cast<int>(square.area()) + static_cast<int>(shout(square.name()).size());
}
