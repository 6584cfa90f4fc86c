// Command kstatus prints the health kstatus (sigs.k8s.io/cli-utils, what Flux and `kubectl
// wait`-style tools compute) gives each object of a `kubectl get -o json` document on stdin: one
// line per object, "<kind>/<name> <status> <message>". Test infrastructure only.
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	// UnmarshalJSON keeps integers as int64: kstatus refuses the float64 generations a plain
	// json.Unmarshal would give.
	var list unstructured.UnstructuredList
	if err := list.UnmarshalJSON(in); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for i := range list.Items {
		obj := &list.Items[i]
		res, err := status.Compute(obj)
		if err != nil {
			fmt.Fprintln(os.Stderr, obj.GetKind(), obj.GetName(), err)
			os.Exit(1)
		}
		fmt.Fprintf(out, "%s/%s %s %s\n", obj.GetKind(), obj.GetName(), res.Status, res.Message)
	}
}
