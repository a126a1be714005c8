package worker

import (
	"fmt"
	"log/slog"

	"github.com/hibiken/asynq"
)

// asynqLogger routes asynq's own log lines through slog.
type asynqLogger struct{ log *slog.Logger }

// NewAsynqLogger returns an asynq.Logger that writes to l with
// component=asynq. Fatal logs at error level and does not exit: the
// process's owner decides.
func NewAsynqLogger(l *slog.Logger) asynq.Logger {
	return asynqLogger{log: l.With("component", "asynq")}
}

func (a asynqLogger) Debug(args ...any) { a.log.Debug(fmt.Sprint(args...)) }
func (a asynqLogger) Info(args ...any)  { a.log.Info(fmt.Sprint(args...)) }
func (a asynqLogger) Warn(args ...any)  { a.log.Warn(fmt.Sprint(args...)) }
func (a asynqLogger) Error(args ...any) { a.log.Error(fmt.Sprint(args...)) }
func (a asynqLogger) Fatal(args ...any) { a.log.Error(fmt.Sprint(args...), "fatal", true) }
