package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/tasks"
)

const (
	producerGoroutines = 32
	// producerRate is the target's rate: latency is measured there, open
	// loop (from each call's scheduled start, so a stall counts fully).
	producerRate = 5000
	// producerBatch is the batch size of the SubmitMany figure, sent from
	// producerBatchers goroutines.
	producerBatch    = 500
	producerBatchers = 4
)

func defineProducer(r *recorder) {
	s := "Producer (tasks.Client.Submit, no worker running)"
	r.define(figureDef{Key: "producer.single", Section: s, Label: "Submit, one goroutine", Unit: "calls/s"})
	r.define(figureDef{Key: "producer.single_p99", Section: s, Label: "Submit latency p99, one goroutine", Unit: "ms", Digits: 2})
	r.define(figureDef{Key: "producer.conc", Section: s, Label: fmt.Sprintf("Submit, %d goroutines", producerGoroutines), Unit: "calls/s",
		Target: "≥ 5,000/s", Pass: atLeast(5000)})
	r.define(figureDef{Key: "producer.conc_p50", Section: s, Label: fmt.Sprintf("Submit latency p50, %d goroutines flat out", producerGoroutines), Unit: "ms", Digits: 2})
	r.define(figureDef{Key: "producer.conc_p99", Section: s, Label: fmt.Sprintf("Submit latency p99, %d goroutines flat out", producerGoroutines), Unit: "ms", Digits: 2})
	r.define(figureDef{Key: "producer.rate_p50", Section: s, Label: fmt.Sprintf("Submit latency p50 at a steady %s/s (open loop)", formatValue(producerRate, 0)), Unit: "ms", Digits: 2})
	r.define(figureDef{Key: "producer.rate_p99", Section: s, Label: fmt.Sprintf("Submit latency p99 at a steady %s/s (open loop)", formatValue(producerRate, 0)), Unit: "ms", Digits: 2,
		Target: "< 5 ms", Pass: below(5)})
	r.define(figureDef{Key: "producer.batch", Section: s, Label: fmt.Sprintf("SubmitMany, batches of %d, %d goroutines", producerBatch, producerBatchers), Unit: "jobs/s",
		Target: "≥ 50,000/s", Pass: atLeast(50000)})
	r.define(figureDef{Key: "producer.batch_p99", Section: s, Label: fmt.Sprintf("SubmitMany latency p99, batches of %d", producerBatch), Unit: "ms", Digits: 2})
	r.define(figureDef{Key: "producer.batch_cmds", Section: s, Label: "SubmitMany: Redis commands per job (scripts' own included)", Unit: "cmds", Digits: 2})
	r.define(figureDef{Key: "producer.batch_redis_cpu", Section: s, Label: "SubmitMany: redis-server CPU per job", Unit: "µs", Digits: 1})
	r.define(figureDef{Key: "producer.batch_client_cpu", Section: s, Label: "SubmitMany: producer CPU per job (this process)", Unit: "µs", Digits: 1})
}

func runProducer(ctx context.Context, b *bench) error {
	re, err := startRedis()
	if err != nil {
		return err
	}
	defer re.close()
	p := tasks.NewClient(re.rdb, tasks.ClientOptions{})
	for _, conc := range []int{1, producerGoroutines} {
		rate, lat, err := submitFor(ctx, p, fmt.Sprintf("prod%d", conc), conc, b.sz.producerFor)
		if err != nil {
			return err
		}
		p50, p99 := 1000*percentile(lat, 0.5), 1000*percentile(lat, 0.99)
		if conc == 1 {
			b.rec.add("producer.single", rate)
			b.rec.add("producer.single_p99", p99)
		} else {
			b.rec.add("producer.conc", rate)
			b.rec.add("producer.conc_p99", p99)
			b.rec.add("producer.conc_p50", p50)
		}
		b.logf("producer, %d goroutines: %.0f submits/s, p50 %.2f ms, p99 %.2f ms", conc, rate, p50, p99)
	}
	lat, err := submitAtRate(ctx, p, "rate", producerGoroutines, producerRate, b.sz.producerFor)
	if err != nil {
		return err
	}
	p50, p99 := 1000*percentile(lat, 0.5), 1000*percentile(lat, 0.99)
	b.rec.add("producer.rate_p50", p50)
	b.rec.add("producer.rate_p99", p99)
	b.logf("producer at %d/s: p50 %.2f ms, p99 %.2f ms", producerRate, p50, p99)
	cs0, err := re.commandStats(ctx)
	if err != nil {
		return err
	}
	st0, err := re.stats(ctx)
	if err != nil {
		return err
	}
	cpu0 := selfCPU()
	rate, lat, err := submitBatchesFor(ctx, p, "batch", producerBatchers, b.sz.producerFor)
	if err != nil {
		return err
	}
	cpu1 := selfCPU()
	st1, err := re.stats(ctx)
	if err != nil {
		return err
	}
	cs1, err := re.commandStats(ctx)
	if err != nil {
		return err
	}
	n := len(lat) * producerBatch
	// Less the INFO calls of the readings themselves.
	cmds := float64(sumCalls(cs1)-sumCalls(cs0)-2) / float64(n)
	b.rec.add("producer.batch", rate)
	b.rec.add("producer.batch_p99", 1000*percentile(lat, 0.99))
	b.rec.add("producer.batch_cmds", cmds)
	b.rec.note("producer.batch_cmds", "per job: "+topCommands(cs0, cs1, n, 8))
	b.rec.add("producer.batch_redis_cpu", 1e6*(st1.CPU-st0.CPU)/float64(n))
	b.rec.add("producer.batch_client_cpu", float64((cpu1-cpu0).Microseconds())/float64(n))
	b.logf("producer, SubmitMany of %d from %d goroutines: %.0f jobs/s, p99 %.2f ms a batch, %.2f Redis commands (%s), redis-server %.1f µs, producer %.1f µs CPU per job",
		producerBatch, producerBatchers, rate, 1000*percentile(lat, 0.99), cmds, topCommands(cs0, cs1, n, 8),
		1e6*(st1.CPU-st0.CPU)/float64(n), float64((cpu1-cpu0).Microseconds())/float64(n))
	return nil
}

// submitBatchesFor calls SubmitMany with batches of producerBatch new jobs
// from conc goroutines for d and returns the rate in jobs/s and every
// call's latency in seconds.
func submitBatchesFor(ctx context.Context, p *tasks.Client, prefix string, conc int, d time.Duration) (float64, []float64, error) {
	elapsed, lat, err := closedLoop(ctx, conc, d, func(g int) func(i int) error {
		reqs := make([]tasks.Request, producerBatch)
		return func(i int) error {
			for k := range reqs {
				id := fmt.Sprintf("%s-%02d-%05d-%03d", prefix, g, i, k)
				reqs[k] = tasks.Request{JobID: tasks.JobID(id), Video: apiclient.CreateRequest{Model: models[k%len(models)], Prompt: "producer " + id}}
			}
			_, err := p.SubmitMany(ctx, reqs)
			return err
		}
	})
	return float64(len(lat)*producerBatch) / elapsed.Seconds(), lat, err
}

// submitAtRate starts Submit calls at a steady rate for d, from conc
// goroutines, and returns each call's latency in seconds counted from its
// scheduled start.
func submitAtRate(ctx context.Context, p *tasks.Client, prefix string, conc int, rate float64, d time.Duration) ([]float64, error) {
	n := int(rate * d.Seconds())
	starts := make(chan int, n)
	for i := range n {
		starts <- i
	}
	close(starts)
	interval := time.Duration(float64(time.Second) / rate)
	t0 := time.Now()
	lat := make([]float64, n)
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range starts {
				at := t0.Add(time.Duration(i) * interval)
				if w := time.Until(at); w > 0 {
					time.Sleep(w)
				}
				if ctx.Err() != nil {
					return
				}
				id := fmt.Sprintf("%s-%07d", prefix, i)
				_, err := p.Submit(ctx, tasks.Request{JobID: tasks.JobID(id), Video: apiclient.CreateRequest{Model: models[i%len(models)], Prompt: "producer " + id}})
				lat[i] = time.Since(at).Seconds()
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return lat, firstErr
}

// submitFor calls Submit from conc goroutines for d and returns the rate
// and every call's latency in seconds.
func submitFor(ctx context.Context, p *tasks.Client, prefix string, conc int, d time.Duration) (float64, []float64, error) {
	elapsed, lat, err := closedLoop(ctx, conc, d, func(g int) func(i int) error {
		return func(i int) error {
			id := fmt.Sprintf("%s-%02d-%07d", prefix, g, i)
			_, err := p.Submit(ctx, tasks.Request{JobID: tasks.JobID(id), Video: apiclient.CreateRequest{Model: models[i%len(models)], Prompt: "producer " + id}})
			return err
		}
	})
	return float64(len(lat)) / elapsed.Seconds(), lat, err
}

// closedLoop runs, from conc goroutines for d, each goroutine g's call
// (made by newCall(g)) again as soon as the last one returned, with i
// counting its calls; a goroutine stops at its first error. It returns the
// time taken, every call's latency in seconds, and the first error.
func closedLoop(ctx context.Context, conc int, d time.Duration, newCall func(g int) func(i int) error) (time.Duration, []float64, error) {
	var mu sync.Mutex
	var all []float64
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for g := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			call := newCall(g)
			var lat []float64
			for i := 0; time.Now().Before(end) && ctx.Err() == nil; i++ {
				t0 := time.Now()
				err := call(i)
				lat = append(lat, time.Since(t0).Seconds())
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return time.Since(start), all, firstErr
}
