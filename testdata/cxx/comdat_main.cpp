// Links with comdat-obj's object; instantiates the same templates and inline functions, so the linker has
// to merge COMDAT groups from both objects.
#include <cstring>
#include <iostream>
#include <memory>

#include "comdat.hpp"

int main(int argc, char** argv) {
    if (argc > 1 && std::strcmp(argv[1], "--version") == 0) {
        std::cout << shout("comdat 1.0.0") << '\n';
        return 0;
    }
    const std::unique_ptr<Shape> shape = std::make_unique<Square>(3.0);
    std::cout << shape->name() << " area " << shape->area() << '\n';
    std::cout << "sum " << sum_of(std::vector<double>{0.5, 1.5, 2.0}) << '\n';
    std::cout << "entry " << comdat_entry(4) << '\n';
    return 0;
}
