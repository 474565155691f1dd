// hello-cxx: pulls in the C++ runtime (iostream, std::string, exceptions). --version throws and catches an
// exception, so a binary whose unwind tables (.eh_frame, .gcc_except_table) were damaged fails visibly.
#include <cstddef>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

const std::string kVersion = "1.0.0";

std::string banner() {
    try {
        throw std::runtime_error("hello-cxx " + kVersion);
    } catch (const std::runtime_error& error) {
        return error.what();
    }
}

int parse_exit_code(const std::string& text) {
    std::size_t used = 0;
    const int code = std::stoi(text, &used);  // throws std::invalid_argument or std::out_of_range
    if (used != text.size()) {
        throw std::invalid_argument("trailing characters in exit code: " + text);
    }
    return code;
}

}  // namespace

int main(int argc, char** argv) {
    const std::vector<std::string> args(argv + 1, argv + argc);
    if (!args.empty() && args[0] == "--version") {
        std::cout << banner() << '\n';
        return 0;
    }
    if (args.size() >= 2 && args[0] == "--exit") {
        try {
            const int code = parse_exit_code(args[1]);
            std::cerr << "exiting with " << code << '\n';
            return code;
        } catch (const std::exception& error) {
            std::cerr << "bad exit code: " << error.what() << '\n';
            return 2;
        }
    }
    std::cout << "hello from c++\n";
    for (std::size_t i = 0; i < args.size(); ++i) {
        std::cout << "argv[" << i + 1 << "] = " << args[i] << '\n';
    }
    return 0;
}
