# MFRC522 with several cards in its field (a fitting room's hook and shelf).
#
#   r = InventoryReader(spi_dev); r.init()
#   r.present(uid)        # does this HALTed card still answer? (WUPA, SELECT by UID, HLTA)
#   card = r.find()       # a card that is not HALTed (REQA, anticollision, SELECT, HLTA) or None
#   r.read_garment(card)  # (gtin, serial) from its GS1 Digital Link, or None
#
# An inventory cycle is `present(uid)` for each card found before, then `find()` until None.
# Every call leaves every card HALTed or IDLE: the HLTA that halts the selected card is a bad
# frame to the other cards a WUPA woke (READY), which drop back to HALT (or IDLE, if REQA woke
# them), so HALTed cards never answer REQA and each `find()` meets only new cards: ones just
# brought in, or ones that lost power at the edge of the field (they come back IDLE).
#
# Anticollision is bit-oriented (ISO 14443-3 6.5.3): on a collision (CollErr, CollReg.CollPos)
# the reader takes the branch with a 1 at that bit and asks again with one more known bit
# (NVB, TxLastBits, RxAlign), until one card's whole cascade level is known.
from edge.drivers.mfrc522 import MFRC522, Card
from edge.gs1 import gs1_ids


class InventoryReader(MFRC522):
    def _anticoll(self):
        # this cascade level's 4 UID bytes + BCC of one card -> self._tx[3:8] (the SEL code is
        # in self._tx[1]); on a collision take the branch with a 1 and ask again
        t = self._tx
        b = self._buf
        known = 0
        for i in range(5):
            t[3 + i] = 0
        while known < 32:
            nb = known >> 3
            nbits = known & 7
            t[2] = ((2 + nb) << 4) | nbits  # NVB: bytes sent (with SEL, NVB) and bits
            n = self._transceive(2 + nb + (1 if nbits else 0), (nbits << 4) | nbits, 0x13)
            if n < 0 or self.coll < 0 or (n == 0 and not self.coll):
                return False  # nobody, or a collision the chip could not place
            # b[0] holds bits nbits.. of UID byte nb (RxAlign), then whole bytes
            keep = (1 << nbits) - 1
            for i in range(n):
                if nb + i < 5:
                    t[3 + nb + i] = (t[3 + nb + i] & keep) | (b[i] & ~keep & 0xFF) if i == 0 else b[i]
            if not self.coll:
                break
            c = nb * 8 + self.coll - 1  # the colliding bit of this level's 40
            if c < known or c >= 32:
                return False
            t[3 + (c >> 3)] |= 1 << (c & 7)  # later bits (0 or kept: ValuesAfterColl) are sent no more
            known = c + 1
        else:
            # all 32 bits known through collisions: the BCC is ours to compute
            t[7] = t[3] ^ t[4] ^ t[5] ^ t[6]
            return True
        return t[3] ^ t[4] ^ t[5] ^ t[6] == t[7]

    def read_garment(self, card):
        """(gtin, serial) from a GS1 Digital Link URI record on a Type 2 tag, or None."""
        return self.read_sample_id(card, gs1_ids)

    def find(self):
        """One card in the field that is not HALTed (REQA), or None. Leaves it HALTed."""
        card = None
        if self._wupa(0x26):
            sak = self._select()
            if sak >= 0:
                if self._same_as_last(sak):
                    card = self._last
                else:
                    card = Card(bytes(self._uid[:self._ulen]), sak, self._tech(sak))
                    self._last = card
        self.halt()  # also sends cards left READY back to IDLE, to answer the next REQA
        return card

    def present(self, uid):
        """Does the card with this UID (bytes) answer? WUPA + SELECT + HLTA."""
        ok = self._wupa() and self._select(uid) >= 0
        self.halt()  # the selected card and every other card woken by WUPA: HALT
        return ok

