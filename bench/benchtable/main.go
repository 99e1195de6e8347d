// Command benchtable prints the benchmarks' results, as recorded by
// `go test -bench` with BENCH_RESULTS set, as a Markdown table: our
// figure, the baseline measured in the same run, their ratio, the target
// and whether it was met.
//
//	benchtable results.jsonl
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

type row struct {
	Bench    string  `json:"bench"`
	Measure  string  `json:"measure"`
	Ours     float64 `json:"ours"`
	Baseline float64 `json:"baseline"`
	Unit     string  `json:"unit"`
	Ratio    float64 `json:"ratio"`
	Target   float64 `json:"target"`
	Limit    float64 `json:"limit"`
	Met      *bool   `json:"met"`
	Note     string  `json:"note"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: benchtable RESULTS.jsonl")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
}

func run(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var rows []row
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var r row
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return fmt.Errorf("%s: %v", path, err)
		}
		rows = append(rows, r)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	fmt.Println("| benchmark | measure | ours | baseline | ours / baseline | target | met |")
	fmt.Println("|---|---|---:|---:|---:|---|---|")
	var notes []string
	for _, r := range rows {
		target := "for the record"
		switch {
		case r.Target > 0 && r.Limit > 0:
			target = fmt.Sprintf("≤ %.2f× and ≤ %s %s", r.Target, num(r.Limit), r.Unit)
		case r.Target > 0:
			target = fmt.Sprintf("≤ %.2f×", r.Target)
		case r.Limit > 0:
			target = fmt.Sprintf("≤ %s %s", num(r.Limit), r.Unit)
		}
		met := ""
		if r.Met != nil {
			met = "no"
			if *r.Met {
				met = "yes"
			}
		}
		measure := r.Measure
		if r.Note != "" {
			notes = append(notes, r.Note)
			measure += fmt.Sprintf(" [%d]", len(notes))
		}
		fmt.Printf("| %s | %s | %s %s | %s %s | %s× | %s | %s |\n", r.Bench, measure, num(r.Ours), r.Unit, num(r.Baseline), r.Unit, ratio(r.Ratio), target, met)
	}
	if len(notes) > 0 {
		fmt.Println()
		for i, n := range notes {
			fmt.Printf("[%d] %s  \n", i+1, n)
		}
	}
	return nil
}

func num(f float64) string {
	switch {
	case f >= 100:
		return fmt.Sprintf("%.0f", f)
	case f >= 10:
		return fmt.Sprintf("%.1f", f)
	default:
		return fmt.Sprintf("%.3g", f)
	}
}

func ratio(f float64) string {
	if f < 0.01 {
		return fmt.Sprintf("%.5f", f)
	}
	return fmt.Sprintf("%.2f", f)
}
