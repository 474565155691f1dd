// hello-go: built natively and cross-compiled for several GOARCHes; --version recovers from a panic.
package main

import (
	"fmt"
	"os"
	"strconv"
)

const version = "1.0.0"

func banner() (text string) {
	defer func() { text = fmt.Sprint(recover()) }()
	panic("hello-go " + version)
}

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "--version" {
		fmt.Println(banner())
		return
	}
	if len(args) >= 2 && args[0] == "--exit" {
		code, err := strconv.Atoi(args[1])
		if err != nil {
			code = 2
		}
		fmt.Fprintf(os.Stderr, "exiting with %d\n", code)
		os.Exit(code)
	}
	fmt.Println("hello from go")
	for i, arg := range args {
		fmt.Printf("argv[%d] = %s\n", i+1, arg)
	}
}
