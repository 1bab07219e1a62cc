// Package sip is bib's signalling: a SIP back-to-back user agent and
// registrar on sipgo.
//
// It owns the SIP side of a call: the two dialogs (leg A towards the
// caller, leg B towards the callee), INVITE with early or delayed offer,
// provisional responses (early media anchored), ACK, BYE, CANCEL,
// re-INVITE and UPDATE passed across, failure mapping, the in-memory
// location service (REGISTER), static routes, and SDP offer/answer
// rewriting (pion/sdp) so media anchors on bib's ports.
//
// It does not touch RTP: every SDP exchange becomes a bridge.MediaDesc
// handed to bridge.Call (SetRemote, Negotiated, Answer). It does not record
// or monitor: hooks (OnAnswered, OnEnded, Authorize) let cmd/ wire that in.
package sip
