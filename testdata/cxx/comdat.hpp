// Inline functions, templates and a class whose virtual functions are all inline: g++ emits each in a
// COMDAT section group in every object that uses it, and the linker keeps one copy.
#pragma once

#include <cctype>
#include <string>
#include <vector>

template <typename T>
T sum_of(const std::vector<T>& values) {
    T total{};
    for (const T& value : values) {
        total += value;
    }
    return total;
}

inline std::string shout(const std::string& text) {
    std::string upper = text;
    for (char& c : upper) {
        c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    }
    return upper + "!";
}

struct Shape {
    virtual ~Shape() = default;
    virtual double area() const = 0;
    virtual std::string name() const { return "shape"; }
};

struct Square : Shape {
    explicit Square(double side) : side_(side) {}
    double area() const override { return side_ * side_; }
    std::string name() const override { return "square"; }
    double side_;
};

// Defined in comdat.cpp (the comdat-obj fixture); comdat_main.cpp calls it.
int comdat_entry(int n);
