// psconv_sdram_chip: behavioural SDR SDRAM (x16, 4 banks) for simulation, written from the
// MT48LC16M16A2 and AS4C32M16SB datasheets. Parameters are cycles at the simulation clock;
// psconv.sim.sdram_chip computes them from its nanosecond table (ceil(t / tCK), the
// datasheets' own conversion rule). Timestamps are cycle numbers of the rising clock edge on
// which a command was registered; "a - b >= T" means at least T clocks between them.
//
// Contract: on the first broken rule the sticky `violation` rises, `violation_code` names the
// rule (codes below, mirrored by psconv.sim.sdram_chip.Violation) and `violation_cycle` the
// clock edge; the model also prints the rule once. Later violations are ignored so the
// first cause is what a test reports. Not modelled (each flagged UNSUPPORTED when used):
// burst terminate, power-down/self refresh, interleaved or full-page bursts.
// DQM masks write bytes; read DQM is ignored (LiteDRAM drives it low on reads).
module psconv_sdram_chip #(
    parameter BANK_BITS = 2,
    parameter ROW_BITS = 13,
    parameter COL_BITS = 9,
    parameter T_RCD = 1,
    parameter T_RP = 1,
    parameter T_RAS = 3,
    parameter T_RAS_MAX = 6000,
    parameter T_RC = 4,
    parameter T_RRD = 1,
    parameter T_WR = 1,
    parameter T_WR_AUTO = 2,
    parameter TRAS_LOCKOUT = 1,
    parameter T_RFC = 4,
    parameter T_MRD = 2,
    parameter T_POWERUP = 5000,
    parameter TCK_PS = 20000,
    parameter TCK_MIN_CL2_PS = 10000,
    parameter TCK_MIN_CL3_PS = 7500,
    parameter TREFI_PS = 7812500,
    parameter REFRESH_POSTPONE_MAX = 8
) (
    input  wire                 clk,
    input  wire                 cke,
    input  wire                 cs_n,
    input  wire                 ras_n,
    input  wire                 cas_n,
    input  wire                 we_n,
    input  wire [BANK_BITS-1:0] ba,
    input  wire [ROW_BITS-1:0]  a,
    input  wire [1:0]           dqm,
    input  wire [15:0]          dq_i,
    input  wire                 dq_i_driven,
    output reg  [15:0]          dq_o,
    output reg                  dq_oe,
    output reg                  violation,
    output reg  [4:0]           violation_code,
    output reg  [31:0]          violation_cycle,
    output wire                 ready,
    output reg  [31:0]          refresh_count,
    output reg  [31:0]          activate_count,
    output reg  [31:0]          read_count,
    output reg  [31:0]          write_count,
    output reg  [31:0]          cycle_count
);
    localparam V_NONE = 0, V_INIT = 1, V_TRCD = 2, V_TRP = 3, V_TRAS = 4, V_TRC = 5,
               V_TWR = 6, V_TRFC = 7, V_TMRD = 8, V_TREFI = 9, V_TRRD = 10,
               V_BANK_OPEN = 11, V_BANK_CLOSED = 12, V_NOT_IDLE = 13, V_MODE = 14,
               V_CL = 15, V_UNSUPPORTED = 16, V_TRAS_MAX = 17, V_BUS = 18,
               V_WRITE_DATA = 19;
    localparam NB = 1 << BANK_BITS;
    localparam integer POSTPONE_MAX = REFRESH_POSTPONE_MAX;  // signed: compared with debt
    localparam PIPE = 16;                       // read output slots (CL + BL <= 11)
    localparam [63:0] START = 64'd1 << 32;      // every "last event" starts long ago

    reg [15:0] mem [0:(1 << (BANK_BITS + ROW_BITS + COL_BITS)) - 1];

    reg [63:0] now;
    reg [63:0] t_act [0:NB-1];
    reg [63:0] t_pre [0:NB-1];
    reg [63:0] t_wrdata [0:NB-1];
    reg [63:0] t_act_any, t_ref, t_mrd, ap_time;
    reg        active [0:NB-1];
    reg [ROW_BITS-1:0] open_row [0:NB-1];
    reg        any_command, init_pall, mode_valid;
    reg [1:0]  init_refs;
    reg [2:0]  cl;
    reg [3:0]  bl;
    reg        refreshing;
    reg [63:0] refi_acc;
    integer    debt;
    // read pipeline: slot k holds the word due on the bus at edge now + k
    reg        rd_valid [0:PIPE-1];
    reg [15:0] rd_data  [0:PIPE-1];
    // write burst in progress
    reg [3:0]  wr_left;
    reg [BANK_BITS-1:0] wr_bank;
    reg [BANK_BITS+ROW_BITS+COL_BITS-1:0] wr_addr;

    assign ready = init_pall && init_refs == 2'd2 && mode_valid;

    integer i;
    initial begin
        now = START;
        t_act_any = 0; t_ref = 0; t_mrd = 0;
        for (i = 0; i < NB; i = i + 1) begin
            t_act[i] = 0; t_pre[i] = 0; t_wrdata[i] = 0; active[i] = 0; open_row[i] = 0;
        end
        for (i = 0; i < PIPE; i = i + 1) begin rd_valid[i] = 0; rd_data[i] = 0; end
        any_command = 0; init_pall = 0; init_refs = 0; mode_valid = 0; cl = 2; bl = 1;
        refreshing = 0; refi_acc = 0; debt = 0; wr_left = 0; wr_bank = 0; wr_addr = 0;
        dq_o = 0; dq_oe = 0; violation = 0; violation_code = 0; violation_cycle = 0;
        refresh_count = 0; activate_count = 0; read_count = 0; write_count = 0; cycle_count = 0;
    end

    task automatic flag(input [4:0] code);
        if (!violation) begin
            violation = 1;
            violation_code = code;
            violation_cycle = cycle_count;
            case (code)
                V_INIT:        $display("SDRAM model: violation INIT at cycle %0d: command before the power-up wait and init sequence (precharge all, 2 auto refresh, load mode) completed", cycle_count);
                V_TRCD:        $display("SDRAM model: violation tRCD at cycle %0d: READ/WRITE too soon after ACTIVE", cycle_count);
                V_TRP:         $display("SDRAM model: violation tRP at cycle %0d: command too soon after PRECHARGE", cycle_count);
                V_TRAS:        $display("SDRAM model: violation tRAS at cycle %0d: PRECHARGE too soon after ACTIVE", cycle_count);
                V_TRC:         $display("SDRAM model: violation tRC at cycle %0d: ACTIVE too soon after ACTIVE on the same bank", cycle_count);
                V_TWR:         $display("SDRAM model: violation tWR at cycle %0d: PRECHARGE too soon after the last write data", cycle_count);
                V_TRFC:        $display("SDRAM model: violation tRFC at cycle %0d: command too soon after AUTO REFRESH", cycle_count);
                V_TMRD:        $display("SDRAM model: violation tMRD at cycle %0d: command too soon after LOAD MODE REGISTER", cycle_count);
                V_TREFI:       $display("SDRAM model: violation tREFI at cycle %0d: %0d refreshes overdue, more than %0d (8192 per 64 ms); %0d refreshes so far", cycle_count, debt, REFRESH_POSTPONE_MAX, refresh_count);
                V_TRRD:        $display("SDRAM model: violation tRRD at cycle %0d: ACTIVE too soon after ACTIVE on another bank", cycle_count);
                V_BANK_OPEN:   $display("SDRAM model: violation BANK_OPEN at cycle %0d: ACTIVE to a bank with an open row", cycle_count);
                V_BANK_CLOSED: $display("SDRAM model: violation BANK_CLOSED at cycle %0d: READ/WRITE to a bank with no open row", cycle_count);
                V_NOT_IDLE:    $display("SDRAM model: violation NOT_IDLE at cycle %0d: AUTO REFRESH or LOAD MODE with a bank open", cycle_count);
                V_MODE:        $display("SDRAM model: violation MODE at cycle %0d: access with no valid mode register", cycle_count);
                V_CL:          $display("SDRAM model: violation CL at cycle %0d: CAS latency too short for the clock period", cycle_count);
                V_UNSUPPORTED: $display("SDRAM model: violation UNSUPPORTED at cycle %0d: not modelled: cke=%0d cs_n=%0d ras_n/cas_n/we_n=%0d%0d%0d a10=%0d (auto-precharge, burst terminate or power-down)", cycle_count, cke, cs_n, ras_n, cas_n, we_n, a[10]);
                V_TRAS_MAX:    $display("SDRAM model: violation tRAS_MAX at cycle %0d: row open too long", cycle_count);
                V_BUS:         $display("SDRAM model: violation BUS at cycle %0d: controller and SDRAM drive DQ at once", cycle_count);
                V_WRITE_DATA:  $display("SDRAM model: violation WRITE_DATA at cycle %0d: WRITE with DQ not driven", cycle_count);
                default:       $display("SDRAM model: violation %0d at cycle %0d", code, cycle_count);
            endcase
        end
    endtask

    // AUTO REFRESH and LOAD MODE need every bank precharged (tRP ago), tRFC and tMRD passed
    task automatic check_all_banks_idle;
        integer n;
        for (n = 0; n < NB; n = n + 1) begin
            if (active[n]) flag(V_NOT_IDLE);
            if (now < t_pre[n] + T_RP) flag(V_TRP);
        end
        if (now < t_ref + T_RFC) flag(V_TRFC);
        if (now < t_mrd + T_MRD) flag(V_TMRD);
    endtask

    wire [2:0] command = {ras_n, cas_n, we_n};
    wire       selected = !cs_n && cke;
    integer b, k;
    reg [BANK_BITS+ROW_BITS+COL_BITS-1:0] addr;
    reg [15:0] word;
    reg [COL_BITS-1:0] column;
    reg        due_valid [0:PIPE-1];
    reg [15:0] due_data  [0:PIPE-1];

    always @(posedge clk) begin
        for (k = 0; k < PIPE; k = k + 1) begin
            due_valid[k] = rd_valid[k];
            due_data[k] = rd_data[k];
        end
        // rows open too long; refresh debt accrues once refresh duty has begun
        for (b = 0; b < NB; b = b + 1)
            if (active[b] && now > t_act[b] + T_RAS_MAX) flag(V_TRAS_MAX);
        if (refreshing) begin
            refi_acc = refi_acc + TCK_PS;
            if (refi_acc >= TREFI_PS) begin
                refi_acc = refi_acc - TREFI_PS;
                debt = debt + 1;
            end
        end
        if (dq_oe && dq_i_driven) flag(V_BUS);

        if (!cke && !cs_n && ready) flag(V_UNSUPPORTED);
        if (selected && command != 3'b111) begin
            if (!any_command && now - START < T_POWERUP) flag(V_INIT);
            any_command = 1;
            wr_left = 0;  // any command ends a write burst (LiteDRAM uses BL = 1)
        end
        if (selected) case (command)
            3'b011: begin  // ACTIVE
                if (!ready) flag(V_INIT);
                if (active[ba]) flag(V_BANK_OPEN);
                if (now < t_pre[ba] + T_RP) flag(V_TRP);
                if (now < t_act[ba] + T_RC) flag(V_TRC);
                if (now < t_act_any + T_RRD) flag(V_TRRD);
                if (now < t_ref + T_RFC) flag(V_TRFC);
                if (now < t_mrd + T_MRD) flag(V_TMRD);
                active[ba] = 1;
                open_row[ba] = a;
                t_act[ba] = now;
                t_act_any = now;
                activate_count = activate_count + 1;
            end
            3'b101, 3'b100: begin  // READ, WRITE
                if (!ready) flag(V_INIT);
                if (!mode_valid) flag(V_MODE);
                if (!active[ba]) flag(V_BANK_CLOSED);
                if (now < t_act[ba] + T_RCD) flag(V_TRCD);
                addr = {ba, open_row[ba], a[COL_BITS-1:0]};
                if (a[10]) begin
                    // auto-precharge: the bank starts precharging by itself after a READ
                    // burst, or T_WR_AUTO after a WRITE's last data; with TRAS_LOCKOUT not
                    // before tRAS, else tRAS must already hold then
                    ap_time = command == 3'b101 ? now + bl : now + bl - 1 + T_WR_AUTO;
                    if (TRAS_LOCKOUT && ap_time < t_act[ba] + T_RAS) ap_time = t_act[ba] + T_RAS;
                    if (ap_time < t_act[ba] + T_RAS) begin
                        if (!violation) $display("SDRAM model: auto-precharge of bank %0d begins %0d clocks after its ACTIVE (tRAS = %0d)", ba, ap_time - t_act[ba], T_RAS);
                        flag(V_TRAS);
                    end
                    active[ba] = 0;
                    t_pre[ba] = ap_time;
                end
                if (command == 3'b101) begin
                    for (k = 0; k < PIPE; k = k + 1)
                        if (k >= cl) due_valid[k] = 0;  // a new READ truncates the old burst
                    for (k = 0; k < 8; k = k + 1)
                        if (k < bl) begin
                            // sequential burst, wrapping inside its BL-aligned block
                            column = (a[COL_BITS-1:0] & ~(bl - 1)) | ((a[COL_BITS-1:0] + k) & (bl - 1));
                            due_valid[cl + k] = 1;
                            due_data[cl + k] = mem[{ba, open_row[ba], column}];
                        end
                    read_count = read_count + 1;
                end else begin
                    for (k = 0; k < PIPE; k = k + 1) due_valid[k] = 0;  // WRITE ends reads
                    wr_left = bl;
                    wr_bank = ba;
                    wr_addr = addr;
                    write_count = write_count + 1;
                end
            end
            3'b010: begin  // PRECHARGE (A10: all banks)
                for (b = 0; b < NB; b = b + 1)
                    if ((a[10] || ba == b[BANK_BITS-1:0]) && active[b]) begin
                        if (now < t_act[b] + T_RAS) begin
                            if (!violation) $display("SDRAM model: PRECHARGE of bank %0d %0d clocks after its ACTIVE (tRAS = %0d)", b, now - t_act[b], T_RAS);
                            flag(V_TRAS);
                        end
                        if (now < t_wrdata[b] + T_WR) flag(V_TWR);
                        active[b] = 0;
                        t_pre[b] = now;
                    end
                if (a[10] && !mode_valid) init_pall = 1;
            end
            3'b001: begin  // AUTO REFRESH
                check_all_banks_idle();
                t_ref = now;
                refresh_count = refresh_count + 1;
                if (init_pall && init_refs != 2'd2) init_refs = init_refs + 1;
                if (refreshing) begin
                    if (debt > -POSTPONE_MAX) debt = debt - 1;
                end else refreshing = 1;
            end
            3'b000: begin  // LOAD MODE REGISTER
                check_all_banks_idle();
                t_mrd = now;
                // A2:0 burst length, A3 burst type, A6:4 CAS latency, A8:7 operating mode
                // (00 = standard; others reserved); A9 write burst mode is ignored.
                mode_valid = a[8:7] == 2'b00 && !a[3] && (a[6:4] == 3'd2 || a[6:4] == 3'd3)
                             && a[2:0] <= 3'd3;
                cl = a[6:4];
                bl = 4'd1 << a[1:0];
                if (mode_valid && ((a[6:4] == 3'd2 && TCK_PS < TCK_MIN_CL2_PS) ||
                                   (a[6:4] == 3'd3 && TCK_PS < TCK_MIN_CL3_PS)))
                    flag(V_CL);
            end
            3'b110: flag(V_UNSUPPORTED);  // BURST TERMINATE
            default: ;                    // NOP
        endcase
        if (debt > POSTPONE_MAX) flag(V_TREFI);

        // write data: word of a burst on this edge, bytes masked by DQM
        if (wr_left != 0) begin
            if (due_valid[0]) flag(V_BUS);
            if (!dq_i_driven && dqm != 2'b11) flag(V_WRITE_DATA);
            word = mem[wr_addr];
            if (!dqm[0]) word[7:0] = dq_i[7:0];
            if (!dqm[1]) word[15:8] = dq_i[15:8];
            mem[wr_addr] = word;
            t_wrdata[wr_bank] = now;
            // next word of a sequential burst, wrapping inside its BL-aligned column block
            wr_addr[COL_BITS-1:0] = (wr_addr[COL_BITS-1:0] & ~(bl - 1)) |
                                    ((wr_addr[COL_BITS-1:0] + 1) & (bl - 1));
            wr_left = wr_left - 1;
        end

        // read data: drive the word due at the next edge, so it is stable across that edge
        dq_oe <= due_valid[1];
        dq_o <= due_valid[1] ? due_data[1] : 16'h0000;
        for (k = 0; k < PIPE - 1; k = k + 1) begin
            rd_valid[k] <= due_valid[k + 1];
            rd_data[k] <= due_data[k + 1];
        end
        rd_valid[PIPE - 1] <= 0;
        now = now + 1;
        cycle_count <= cycle_count + 1;
    end
endmodule
