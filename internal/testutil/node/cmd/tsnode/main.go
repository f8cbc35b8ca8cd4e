// Command tsnode is the tests' mesh node: internal/testutil/node's Main,
// which documents its flags, its output and its commands. It runs only
// inside the tests' private network namespaces.
package main

import (
	"fmt"
	"os"

	"github.com/tallship-go/tallship/internal/testutil/node"
)

func main() {
	if err := node.Main(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "tsnode:", err)
		os.Exit(1)
	}
}
