package milter

import "time"

// Observer is told what the milter does, for metrics
// (cryptmilter_messages_in_flight, cryptmilter_slot_wait_seconds,
// cryptmilter_reinject_attempts_total and _failures_total). Its methods
// are called from many sessions at once.
type Observer interface {
	// MessagesInFlight adds delta to the messages between MAIL and the
	// end-of-message reply (+1 at MAIL, -1 when the message ends).
	MessagesInFlight(delta int)
	// SlotWait records how long a message waited for a processing slot
	// (also when it gave up at limits.message_timeout).
	SlotWait(d time.Duration)
	// Reinject records one copy handed to the re-injection listener:
	// err is nil when the listener accepted it.
	Reinject(err error)
}

// NopObserver is an Observer that records nothing.
type NopObserver struct{}

func (NopObserver) MessagesInFlight(int)   {}
func (NopObserver) SlotWait(time.Duration) {}
func (NopObserver) Reinject(error)         {}
