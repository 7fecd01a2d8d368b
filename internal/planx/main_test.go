package planx

import (
	"fmt"
	"testing"

	"github.com/odsflow/odsflow/internal/simulate"
)

func TestPlan(t *testing.T) {
	cfg := simulate.Config{TopicPrefix: "crash.transactions_schema", Money: simulate.MoneyDecimal, Customers: 300, Events: 60_000, Seed: 13, Rate: 2000}
	events, err := simulate.Plan(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range events {
		if e.Table == simulate.TableTransactions && (e.ID == 10260 || e.ID == 3543) {
			fmt.Printf("%d %s %s id=%d lsn=%d after=%v before=%v\n", i, e.Table, e.Op, e.ID, e.Source.LSN, e.After, e.Before)
		}
	}
}
