package simulate

import (
	"fmt"
	"iter"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// snapshotTime is the simulated database's wall clock when the snapshot
// starts. It is fixed, not the real time, so that a seed always gives the
// same bytes.
func snapshotTime() time.Time { return time.Date(2026, time.January, 15, 9, 0, 0, 0, time.UTC) }

// Plan returns the whole traffic of cfg, in production order: the snapshot,
// then cfg.Events streaming changes. It does no I/O and is deterministic:
// the same cfg always gives the same events.
func Plan(cfg Config) ([]Event, error) {
	seq, err := Events(cfg)
	if err != nil {
		return nil, err
	}
	var out []Event
	for ev := range seq {
		out = append(out, ev)
	}
	return out, nil
}

// Events is Plan as a sequence, generated as it is consumed: memory grows
// with the number of customers and accounts, not with the number of events.
func Events(cfg Config) (iter.Seq[Event], error) {
	cfg, err := cfg.normalized()
	if err != nil {
		return nil, err
	}
	return func(yield func(Event) bool) {
		newPlanner(cfg).run(yield)
	}, nil
}

// Tuning of the traffic. Weights are relative frequencies of streaming
// operations; an operation that is impossible at that point (no candidate)
// becomes a transaction insert, which always is.
const (
	wTxnInsert       = 40
	wTxnEarly        = 3
	wTxnDelete       = 2
	wCustomerInsert  = 5
	wCustomerUpdate  = 10
	wAccountInsert   = 7
	wAccountUpdate   = 15
	wAccountMove     = 5
	wAccountDelete   = 3
	wCustomerDelete  = 2
	quietAccountPct  = 30  // % of new accounts that never get transactions
	recentTxnsKept   = 512 // transactions remembered as candidates for deletes
	earlyMinDelay    = 10  // an announced account's insert comes 10…59 events later
	earlyDelaySpread = 50
)

type customerState struct {
	row      Customer
	accounts []int32 // live and announced accounts, in creation order
	// transactional: one of its accounts has (or will have) transactions.
	transactional bool
	// moveInvolved: an account moved from or to it.
	moveInvolved bool
}

type accountState struct {
	row           Account
	transactional bool
	announced     bool // transactions were produced, the insert not yet
	due           int  // with announced: the streaming index of the insert
	snapshotTxns  int
}

type txnRef struct {
	id      int32
	account int32
}

// planner generates the traffic. It is a small simulated source database:
// it keeps the rows that later changes refer to, never the history.
type planner struct {
	cfg      Config
	rng      *rand.Rand
	first    []string
	last     []string
	statuses []string
	types    []string
	domains  []string
	ops      []weightedOp
	version  string
	name     string
	schema   string

	clock         int64 // µs: the source database's wall clock
	lsn           int64
	lastCommitLSN int64
	txID          int64

	customers     map[int32]*customerState
	accounts      map[int32]*accountState
	liveCustomers idSet
	liveAccounts  idSet // inserted, not deleted
	quietAccounts idSet // inserted, not deleted, never transactional
	txnAccounts   idSet // transactional, inserted or announced
	recentTxns    []txnRef
	announced     []*accountState // ordered by due
	usedNumbers   map[int32]bool

	nextCustomer, nextAccount, nextTxn int32
	emitted                            int // streaming events queued so far
	queue                              []Event
}

func newPlanner(cfg Config) *planner {
	p := &planner{
		cfg:           cfg,
		rng:           rand.New(rand.NewPCG(uint64(cfg.Seed), 0x0d5f10e)),
		first:         strings.Fields(firstNames),
		last:          strings.Fields(lastNames),
		statuses:      strings.Fields(accountStatuses),
		types:         strings.Fields(transactionTypes),
		domains:       strings.Fields(emailDomains),
		customers:     map[int32]*customerState{},
		accounts:      map[int32]*accountState{},
		liveCustomers: newIDSet(),
		liveAccounts:  newIDSet(),
		quietAccounts: newIDSet(),
		txnAccounts:   newIDSet(),
		usedNumbers:   map[int32]bool{},
		nextCustomer:  1,
		nextAccount:   1,
		nextTxn:       1,
	}
	p.ops = p.streamingOps()
	p.version = "2.5.4.Final"
	if cfg.DebeziumLayout == LayoutDebezium3 {
		p.version = "3.0.8.Final"
	}
	p.name, p.schema = sourceNames(cfg.TopicPrefix)
	p.lsn = 23_000_000 + p.rng.Int64N(1_000_000)
	p.txID = 700 + p.rng.Int64N(300)
	return p
}

// run generates everything and hands it to yield until yield says stop.
func (p *planner) run(yield func(Event) bool) {
	for _, ev := range p.snapshot() {
		if !yield(ev) {
			return
		}
	}
	for p.emitted < p.cfg.Events {
		free := p.cfg.Events - p.emitted - len(p.announced)
		if len(p.announced) > 0 && (p.announced[0].due <= p.emitted || free <= 0) {
			p.insertAnnounced()
		} else {
			p.step(free)
		}
		for _, ev := range p.queue {
			if !yield(ev) {
				return
			}
		}
		p.queue = p.queue[:0]
	}
}

// --- the snapshot ---

func (p *planner) snapshot() []Event {
	t0 := micros(snapshotTime())
	day := int64(24 * time.Hour / time.Microsecond)
	var accountIDs []int32
	for range p.cfg.Customers {
		created := t0 - 30*day - p.rng.Int64N(1000*day)
		c := p.newCustomer(created, created+p.rng.Int64N(t0-created))
		for k := 1 + p.rng.IntN(3); k > 0; k-- {
			transactional := p.nextAccount == 1 || p.rng.IntN(100) >= quietAccountPct
			acCreated := created + p.rng.Int64N(t0-created)
			a := p.newAccount(c, transactional, acCreated, acCreated+p.rng.Int64N(t0-acCreated))
			if transactional {
				a.snapshotTxns = p.rng.IntN(7)
				if a.row.ID == 1 {
					a.snapshotTxns++
				}
			}
			p.insertAccount(a)
			accountIDs = append(accountIDs, a.row.ID)
		}
	}

	// One snapshot transaction: every row has its LSN and txId.
	type snapRow struct {
		table Table
		row   Row
	}
	var rows []snapRow
	for _, id := range accountIDs {
		rows = append(rows, snapRow{TableAccounts, p.accounts[id].row})
	}
	for _, id := range p.liveCustomers.ids {
		rows = append(rows, snapRow{TableCustomers, p.customers[id].row})
	}
	for _, id := range accountIDs {
		for range p.accounts[id].snapshotTxns {
			rows = append(rows, snapRow{TableTransactions, p.newTransaction(p.accounts[id], p.historicTime(t0))})
		}
	}
	events := make([]Event, 0, len(rows))
	read := t0
	for i, r := range rows {
		firstInTable := i == 0 || rows[i-1].table != r.table
		lastInTable := i == len(rows)-1 || rows[i+1].table != r.table
		read += 50 + p.rng.Int64N(250)
		ev := Event{
			Topic: p.cfg.Topic(r.table), Table: r.table, Op: OpRead, ID: r.row.Key(), After: r.row,
			Source: p.source(r.table, read, p.snapshotMarker(i, len(rows), firstInTable, lastInTable)),
			TsUs:   read + 2_000 + p.rng.Int64N(250_000),
		}
		events = append(events, ev)
	}
	p.clock = read
	p.lastCommitLSN = p.lsn
	return events
}

// snapshotMarker is source.snapshot of the i-th of n snapshot rows: Debezium
// 2.x marks the last row "last" and the others "true"; 2.7+/3.x also marks
// the first row "first" and each table's first and last rows.
func (p *planner) snapshotMarker(i, n int, firstInTable, lastInTable bool) string {
	if i == n-1 {
		return "last"
	}
	if p.cfg.DebeziumLayout != LayoutDebezium3 {
		return "true"
	}
	switch {
	case i == 0:
		return "first"
	case lastInTable:
		return "last_in_data_collection"
	case firstInTable:
		return "first_in_data_collection"
	}
	return "true"
}

// --- streaming ---

type weightedOp struct {
	weight int
	do     func(free int) bool // false: impossible now
}

func (p *planner) streamingOps() []weightedOp {
	return []weightedOp{
		{wTxnInsert, func(int) bool { return false }}, // the fallback below
		{wTxnEarly, p.announceAccount},
		{wTxnDelete, p.deleteTransaction},
		{wCustomerInsert, p.insertCustomer},
		{wCustomerUpdate, p.updateCustomer},
		{wAccountInsert, p.insertNewAccount},
		{wAccountUpdate, p.updateAccount},
		{wAccountMove, p.moveAccount},
		{wAccountDelete, p.deleteAccount},
		{wCustomerDelete, p.deleteCustomer},
	}
}

// step performs one randomly chosen operation that queues at most free
// events; an impossible one becomes a transaction insert.
func (p *planner) step(free int) {
	total := 0
	for _, op := range p.ops {
		total += op.weight
	}
	n := p.rng.IntN(total)
	for _, op := range p.ops {
		if n < op.weight {
			if !op.do(free) {
				p.insertTransaction()
			}
			return
		}
		n -= op.weight
	}
}

// begin starts a source database transaction: the clock moves on, a new
// txId.
func (p *planner) begin() {
	p.clock += 20_000 + p.rng.Int64N(2_000_000)
	p.txID += 1 + p.rng.Int64N(3)
}

// commit ends it: the next transaction's sequence names this commit's LSN.
func (p *planner) commit() {
	p.lsn += 24
	p.lastCommitLSN = p.lsn
}

// change queues one streaming change of the current transaction.
func (p *planner) change(op string, id int32, before, after Row) {
	t := tableOf(before, after)
	p.lsn += 40 + p.rng.Int64N(400)
	p.queue = append(p.queue, Event{
		Topic: p.cfg.Topic(t), Table: t, Op: op, ID: id, Before: before, After: after,
		Source: p.source(t, p.clock, "false"),
		TsUs:   p.clock + 2_000 + p.rng.Int64N(250_000),
	})
	p.emitted++
}

func tableOf(before, after Row) Table {
	if after != nil {
		return after.Table()
	}
	return before.Table()
}

func (p *planner) source(t Table, tsUs int64, snapshot string) Source {
	seq := fmt.Sprintf(`[null,"%d"]`, p.lsn)
	if p.lastCommitLSN != 0 {
		seq = fmt.Sprintf(`["%d","%d"]`, p.lastCommitLSN, p.lsn)
	}
	return Source{
		Version: p.version, Connector: "postgresql", Name: p.name, TsUs: tsUs, Snapshot: snapshot,
		DB: p.name, Sequence: seq, Schema: p.schema, Table: string(t), TxID: p.txID, LSN: p.lsn,
	}
}

func (p *planner) insertTransaction() {
	a := p.accounts[p.txnAccounts.pick(p.rng)]
	created := p.clock
	if p.rng.IntN(2) == 0 {
		created = p.historicTime(p.clock)
	}
	p.begin()
	t := p.newTransaction(a, created)
	p.change(OpCreate, t.ID, nil, t)
	p.commit()
	if !a.announced {
		p.rememberTxn(txnRef{t.ID, a.row.ID})
	}
}

// announceAccount produces a transaction of an account whose insert comes
// later (an account created without an insert event yet, as seen by a
// consumer): the insert is queued earlyMinDelay… events later.
func (p *planner) announceAccount(free int) bool {
	if free < 2 || p.liveCustomers.len() == 0 {
		return false
	}
	c := p.customers[p.liveCustomers.pick(p.rng)]
	p.begin()
	a := p.newAccount(c, true, p.clock, p.clock)
	a.announced = true
	a.due = p.emitted + earlyMinDelay + p.rng.IntN(earlyDelaySpread)
	i, _ := slices.BinarySearchFunc(p.announced, a.due+1, func(x *accountState, due int) int { return x.due - due })
	p.announced = slices.Insert(p.announced, i, a)
	t := p.newTransaction(a, p.clock)
	p.change(OpCreate, t.ID, nil, t)
	p.commit()
	return true
}

func (p *planner) insertAnnounced() {
	a := p.announced[0]
	p.announced = p.announced[1:]
	a.announced = false
	p.begin()
	a.row.UpdatedAt = ptr(p.clock)
	p.insertAccount(a)
	p.change(OpCreate, a.row.ID, nil, a.row)
	p.commit()
}

func (p *planner) deleteTransaction(int) bool {
	if len(p.recentTxns) == 0 {
		return false
	}
	i := p.rng.IntN(len(p.recentTxns))
	t := p.recentTxns[i]
	p.recentTxns[i] = p.recentTxns[len(p.recentTxns)-1]
	p.recentTxns = p.recentTxns[:len(p.recentTxns)-1]
	p.begin()
	p.change(OpDelete, t.id, Transaction{ID: t.id}, nil)
	p.commit()
	return true
}

func (p *planner) insertCustomer(int) bool {
	p.begin()
	c := p.newCustomer(p.clock, p.clock)
	p.change(OpCreate, c.row.ID, nil, c.row)
	p.commit()
	return true
}

func (p *planner) updateCustomer(int) bool {
	if p.liveCustomers.len() == 0 {
		return false
	}
	c := p.customers[p.liveCustomers.pick(p.rng)]
	p.begin()
	switch p.rng.IntN(5) {
	case 0, 1:
		c.row.Email = p.email(c.row.FirstName, c.row.LastName, c.row.ID)
	case 2, 3:
		c.row.Mobile = p.mobile()
	default:
		c.row.LastName = p.pick(p.last)
		c.row.Email = p.email(c.row.FirstName, c.row.LastName, c.row.ID)
	}
	c.row.UpdatedAt = ptr(p.clock)
	p.change(OpUpdate, c.row.ID, nil, c.row)
	p.commit()
	return true
}

func (p *planner) insertNewAccount(int) bool {
	if p.liveCustomers.len() == 0 {
		return false
	}
	c := p.customers[p.liveCustomers.pick(p.rng)]
	p.begin()
	a := p.newAccount(c, p.rng.IntN(100) >= quietAccountPct, p.clock, p.clock)
	p.insertAccount(a)
	p.change(OpCreate, a.row.ID, nil, a.row)
	p.commit()
	return true
}

func (p *planner) updateAccount(int) bool {
	if p.liveAccounts.len() == 0 {
		return false
	}
	a := p.accounts[p.liveAccounts.pick(p.rng)]
	p.begin()
	a.row.BalanceCents += p.money(p.rng.Int64N(200_000) - 80_000)
	if p.rng.IntN(5) == 0 {
		a.row.AccountStatus = p.pick(p.statuses)
	}
	a.row.UpdatedAt = ptr(p.clock)
	p.change(OpUpdate, a.row.ID, nil, a.row)
	p.commit()
	return true
}

// moveAccount gives a quiet account (one that never has transactions) to
// another live customer: an update of customer_id.
func (p *planner) moveAccount(int) bool {
	if p.quietAccounts.len() == 0 || p.liveCustomers.len() < 2 {
		return false
	}
	a := p.accounts[p.quietAccounts.pick(p.rng)]
	var to *customerState
	for range 4 {
		if c := p.customers[p.liveCustomers.pick(p.rng)]; c.row.ID != a.row.CustomerID {
			to = c
			break
		}
	}
	if to == nil {
		return false
	}
	from := p.customers[a.row.CustomerID]
	from.accounts = remove(from.accounts, a.row.ID)
	from.moveInvolved = true
	to.accounts = append(to.accounts, a.row.ID)
	to.moveInvolved = true
	p.begin()
	a.row.CustomerID = to.row.ID
	a.row.UpdatedAt = ptr(p.clock)
	p.change(OpUpdate, a.row.ID, nil, a.row)
	p.commit()
	return true
}

func (p *planner) deleteAccount(int) bool {
	if p.quietAccounts.len() == 0 {
		return false
	}
	a := p.accounts[p.quietAccounts.pick(p.rng)]
	p.begin()
	p.dropAccount(a)
	p.commit()
	return true
}

// deleteCustomer deletes a customer that never had transactions nor took
// part in a move, its accounts first (ON DELETE CASCADE order: children
// before the parent, in one source transaction).
func (p *planner) deleteCustomer(free int) bool {
	if p.liveCustomers.len() == 0 {
		return false
	}
	var c *customerState
	for range 8 {
		cand := p.customers[p.liveCustomers.pick(p.rng)]
		if !cand.transactional && !cand.moveInvolved && len(cand.accounts)+1 <= free {
			c = cand
			break
		}
	}
	if c == nil {
		return false
	}
	p.begin()
	for _, id := range slices.Clone(c.accounts) {
		p.dropAccount(p.accounts[id])
	}
	p.liveCustomers.remove(c.row.ID)
	delete(p.customers, c.row.ID)
	p.change(OpDelete, c.row.ID, Customer{ID: c.row.ID}, nil)
	p.commit()
	return true
}

func (p *planner) dropAccount(a *accountState) {
	c := p.customers[a.row.CustomerID]
	c.accounts = remove(c.accounts, a.row.ID)
	p.liveAccounts.remove(a.row.ID)
	p.quietAccounts.remove(a.row.ID)
	delete(p.accounts, a.row.ID)
	p.change(OpDelete, a.row.ID, Account{ID: a.row.ID}, nil)
}

func (p *planner) rememberTxn(t txnRef) {
	if len(p.recentTxns) == recentTxnsKept {
		p.recentTxns[p.rng.IntN(recentTxnsKept)] = t
		return
	}
	p.recentTxns = append(p.recentTxns, t)
}

// --- rows ---

func (p *planner) newCustomer(created, updated int64) *customerState {
	id := p.nextCustomer
	p.nextCustomer++
	first, last := p.pick(p.first), p.pick(p.last)
	c := &customerState{row: Customer{
		ID: id, FirstName: first, LastName: last, Email: p.email(first, last, id), Mobile: p.mobile(),
		CreatedAt: ptr(created), UpdatedAt: ptr(updated),
	}}
	p.customers[id] = c
	p.liveCustomers.add(id)
	return c
}

// newAccount creates the account's state (not yet inserted) for customer c.
func (p *planner) newAccount(c *customerState, transactional bool, created, updated int64) *accountState {
	id := p.nextAccount
	p.nextAccount++
	number := int32(100_000_000 + p.rng.IntN(900_000_000))
	for p.usedNumbers[number] {
		number = int32(100_000_000 + p.rng.IntN(900_000_000))
	}
	p.usedNumbers[number] = true
	status := "ACTIVE"
	if p.rng.IntN(4) == 0 {
		status = p.pick(p.statuses)
	}
	a := &accountState{transactional: transactional, row: Account{
		ID: id, AccountNumber: number, AccountStatus: status,
		BalanceCents: p.money(p.rng.Int64N(5_000_000)), CustomerID: c.row.ID,
		CreatedAt: ptr(created), UpdatedAt: ptr(updated),
	}}
	p.accounts[id] = a
	c.accounts = append(c.accounts, id)
	if transactional {
		c.transactional = true
		p.txnAccounts.add(id)
	}
	return a
}

// insertAccount makes an account live (it has, or is about to have, its
// insert or snapshot row).
func (p *planner) insertAccount(a *accountState) {
	p.liveAccounts.add(a.row.ID)
	if !a.transactional {
		p.quietAccounts.add(a.row.ID)
	}
}

func (p *planner) newTransaction(a *accountState, created int64) Transaction {
	id := p.nextTxn
	p.nextTxn++
	amount := 100 + p.rng.Int64N(50_000)
	if p.rng.IntN(10) == 0 {
		amount = 100_000 + p.rng.Int64N(900_000) // large: ≥ 1000.00
	}
	if p.rng.IntN(100) < 15 {
		amount = -amount
	}
	amount = p.money(amount)
	if amount == 0 {
		amount = 100
	}
	return Transaction{
		ID: id, RefNumber: fmt.Sprintf("TXN%08d%04d", id, p.rng.IntN(10_000)),
		CustomerID: a.row.CustomerID, AccountID: a.row.ID, AmountCents: amount,
		Type: p.transactionType(), CreatedAt: created,
	}
}

// historicTime is a random instant in the 14 months before now (µs).
func (p *planner) historicTime(now int64) int64 {
	t := time.UnixMicro(now).UTC()
	from := micros(t.AddDate(0, -14, 0))
	return from + p.rng.Int64N(now-from)
}

// transactionType is debit, credit, withdrawal or deposit, mostly lower
// case, sometimes upper or title case.
func (p *planner) transactionType() string {
	t := p.pick(p.types)
	switch n := p.rng.IntN(10); {
	case n == 0:
		return strings.ToUpper(t)
	case n == 1:
		return strings.ToUpper(t[:1]) + t[1:]
	}
	return t
}

// money keeps cents as they are for Money "decimal" and rounds them toward
// zero to whole units for Money "int".
func (p *planner) money(cents int64) int64 {
	if p.cfg.Money == MoneyInt {
		return cents - cents%100
	}
	return cents
}

func (p *planner) email(first, last string, id int32) string {
	return fmt.Sprintf("%s.%s%d@%s", strings.ToLower(first), strings.ToLower(last), id, p.pick(p.domains))
}

func (p *planner) mobile() string {
	return fmt.Sprintf("+44 7%03d %06d", p.rng.IntN(1000), p.rng.IntN(1_000_000))
}

func (p *planner) pick(from []string) string { return from[p.rng.IntN(len(from))] }

const (
	firstNames       = "Ada Alan Amara Ben Chen Chloe Dara Elif Emma Farah Grace Hugo Ines Ivan Jon Kai Lena Liam Maya Mohammed Nia Noah Olga Omar Priya Quinn Rosa Sam Sofia Tariq Uma Vera Wei Yusuf Zoe"
	lastNames        = "Adams Baker Chen Costa Dubois Evans Fischer Garcia Haddad Ivanova Jones Kim Kowalski Lopez Murphy Nguyen Okafor Patel Quinn Rossi Schmidt Silva Singh Tanaka Walker Xu Yilmaz Zhang"
	accountStatuses  = "ACTIVE DORMANT FROZEN CLOSED"
	transactionTypes = "debit debit debit credit credit withdrawal withdrawal deposit" // weighted
	emailDomains     = "example.com example.org example.net"
)

// idSet is a set of ids with uniform random picks in O(1).
type idSet struct {
	ids []int32
	pos map[int32]int
}

func newIDSet() idSet { return idSet{pos: map[int32]int{}} }

func (s *idSet) len() int { return len(s.ids) }

func (s *idSet) add(id int32) {
	if _, ok := s.pos[id]; ok {
		return
	}
	s.pos[id] = len(s.ids)
	s.ids = append(s.ids, id)
}

func (s *idSet) remove(id int32) {
	i, ok := s.pos[id]
	if !ok {
		return
	}
	last := s.ids[len(s.ids)-1]
	s.ids[i] = last
	s.pos[last] = i
	s.ids = s.ids[:len(s.ids)-1]
	delete(s.pos, id)
}

func (s *idSet) pick(r *rand.Rand) int32 { return s.ids[r.IntN(len(s.ids))] }

func remove(ids []int32, id int32) []int32 {
	if i := slices.Index(ids, id); i >= 0 {
		return slices.Delete(ids, i, i+1)
	}
	return ids
}
