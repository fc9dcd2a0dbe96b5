// Behavioural model of the Lattice ECP5 MULT18X18D (sysDSP 18x18 multiplier), for simulation and
// formal checks of the configuration psconv instantiates (psconv/hw/dsp.py). Written for psconv:
// no simulation model of the primitive ships with the PyPI tools (Yosys has only a blackbox).
//
// Modelled (Lattice sysDSP: every register stage picks one of four clocks, clock enables and
// resets; an operand is two's complement when its SIGNEDA/SIGNEDB is high, unsigned when low):
//   * the operands come from the parallel A and B inputs: SOURCEA = SOURCEB = 0 with
//     SOURCEB_MODE "B_SHIFT" (the B operand is then the B input). A high SOURCEA/SOURCEB selects a
//     shift chain the model does not have and makes that operand x;
//   * SIGNEDA/SIGNEDB travel with their operand through its input register;
//   * P is the 36-bit product (every 18x18 product fits), SIGNEDP = SIGNEDA | SIGNEDB beside it;
//   * four optional register stages, each "NONE" or "CLK0".."CLK3" with its "CEn" and "RSTn":
//     input A, input B, pipeline (after the multiplier), output. A register loads on the rising
//     edge of its clock when its clock enable is high; with RESETMODE "SYNC" a high reset clears
//     it on that edge, whatever the enable. Registers start at 0 (power-up; GSR is not modelled);
//   * CLKn_DIV "ENABLED" (the primitive's default): the registers run at the rate of CLKn.
// Anything else (MULT_BYPASS, HIGHSPEED_CLK, CAS_MATCH_REG, another SOURCEB_MODE, RESETMODE
// "ASYNC", CLKn_DIV "DISABLED", a registered C input) stops elaboration with an error naming the
// parameter. C is accepted and unused; the SRIA/SRIB, SROA/SROB and ROA/ROB/ROC ports are absent,
// so a netlist that connects them fails to elaborate rather than simulate something unmodelled.
// Legal values are the prjtrellis bit database's (SOURCEB_MODE: B_SHIFT, C_SHIFT, B_C_DYNAMIC,
// HIGHSPEED; ecppack fails on any other).
//
// Checked against the generic registered `*` by tests/hw/test_hw_ecp5_dsp.py
// (psconv.sim.ecp5_dsp: a Yosys SAT equivalence proof for every RegisteredMultiplier width).

module MULT18X18D (
    input  A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0,
    input  B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0,
    input  C17, C16, C15, C14, C13, C12, C11, C10, C9, C8, C7, C6, C5, C4, C3, C2, C1, C0,
    input  SIGNEDA, SIGNEDB, SOURCEA, SOURCEB,
    input  CLK3, CLK2, CLK1, CLK0, CE3, CE2, CE1, CE0, RST3, RST2, RST1, RST0,
    output P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20, P19, P18, P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0,
    output SIGNEDP
);
    parameter REG_INPUTA_CLK = "NONE";
    parameter REG_INPUTA_CE = "CE0";
    parameter REG_INPUTA_RST = "RST0";
    parameter REG_INPUTB_CLK = "NONE";
    parameter REG_INPUTB_CE = "CE0";
    parameter REG_INPUTB_RST = "RST0";
    parameter REG_INPUTC_CLK = "NONE";
    parameter REG_INPUTC_CE = "CE0";
    parameter REG_INPUTC_RST = "RST0";
    parameter REG_PIPELINE_CLK = "NONE";
    parameter REG_PIPELINE_CE = "CE0";
    parameter REG_PIPELINE_RST = "RST0";
    parameter REG_OUTPUT_CLK = "NONE";
    parameter REG_OUTPUT_CE = "CE0";
    parameter REG_OUTPUT_RST = "RST0";
    parameter CLK0_DIV = "ENABLED";
    parameter CLK1_DIV = "ENABLED";
    parameter CLK2_DIV = "ENABLED";
    parameter CLK3_DIV = "ENABLED";
    parameter HIGHSPEED_CLK = "NONE";
    parameter GSR = "ENABLED";
    parameter CAS_MATCH_REG = "FALSE";
    parameter SOURCEB_MODE = "B_SHIFT";
    parameter MULT_BYPASS = "DISABLED";
    parameter RESETMODE = "SYNC";

    generate
        if (SOURCEB_MODE != "B_SHIFT")
            $error("MULT18X18D model: SOURCEB_MODE must be B_SHIFT (C_SHIFT, B_C_DYNAMIC and HIGHSPEED are not modelled; nothing else exists)");
        if (MULT_BYPASS != "DISABLED")
            $error("MULT18X18D model: MULT_BYPASS must be DISABLED");
        if (HIGHSPEED_CLK != "NONE")
            $error("MULT18X18D model: HIGHSPEED_CLK must be NONE");
        if (CAS_MATCH_REG != "FALSE")
            $error("MULT18X18D model: CAS_MATCH_REG must be FALSE");
        if (RESETMODE != "SYNC")
            $error("MULT18X18D model: RESETMODE must be SYNC");
        if (REG_INPUTC_CLK != "NONE")
            $error("MULT18X18D model: REG_INPUTC_CLK must be NONE (the C input is not modelled)");
        if (CLK0_DIV != "ENABLED" || CLK1_DIV != "ENABLED" || CLK2_DIV != "ENABLED" || CLK3_DIV != "ENABLED")
            $error("MULT18X18D model: CLK0_DIV..CLK3_DIV must be ENABLED");
        if (GSR != "ENABLED" && GSR != "DISABLED")
            $error("MULT18X18D model: GSR must be ENABLED or DISABLED");
    endgenerate

    wire [3:0] clk = {CLK3, CLK2, CLK1, CLK0};
    wire [3:0] ce = {CE3, CE2, CE1, CE0};
    wire [3:0] rst = {RST3, RST2, RST1, RST0};

    // Operands with their sign controls: {SIGNEDx, x[17:0]}.
    wire [17:0] a_in = SOURCEA ? 18'bx : {A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0};
    wire [17:0] b_in = SOURCEB ? 18'bx : {B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0};
    wire [18:0] a_q, b_q;
    psconv_mult18x18d_register #(.WIDTH(19), .CLK(REG_INPUTA_CLK), .CE(REG_INPUTA_CE), .RST(REG_INPUTA_RST))
        input_a (.clk(clk), .ce(ce), .rst(rst), .d({SIGNEDA, a_in}), .q(a_q));
    psconv_mult18x18d_register #(.WIDTH(19), .CLK(REG_INPUTB_CLK), .CE(REG_INPUTB_CE), .RST(REG_INPUTB_RST))
        input_b (.clk(clk), .ce(ce), .rst(rst), .d({SIGNEDB, b_in}), .q(b_q));

    // Each operand widened by one bit: its sign bit when signed, 0 when unsigned.
    wire signed [18:0] a_op = {a_q[18] & a_q[17], a_q[17:0]};
    wire signed [18:0] b_op = {b_q[18] & b_q[17], b_q[17:0]};
    wire signed [37:0] product = a_op * b_op;   // every 18x18 product fits its low 36 bits

    wire [36:0] pipeline_q, output_q;
    psconv_mult18x18d_register #(.WIDTH(37), .CLK(REG_PIPELINE_CLK), .CE(REG_PIPELINE_CE), .RST(REG_PIPELINE_RST))
        pipeline (.clk(clk), .ce(ce), .rst(rst), .d({a_q[18] | b_q[18], product[35:0]}), .q(pipeline_q));
    psconv_mult18x18d_register #(.WIDTH(37), .CLK(REG_OUTPUT_CLK), .CE(REG_OUTPUT_CE), .RST(REG_OUTPUT_RST))
        outputs (.clk(clk), .ce(ce), .rst(rst), .d(pipeline_q), .q(output_q));

    assign {SIGNEDP, P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20, P19, P18,
            P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2, P1, P0} = output_q;
endmodule

// One register stage of the model: q = d when CLK is "NONE"; else a register on the rising edge
// of clk[n] ("CLKn"), loading when ce[m] ("CEm") is high, cleared by rst[k] ("RSTk").
module psconv_mult18x18d_register #(
    parameter WIDTH = 1,
    parameter CLK = "NONE",
    parameter CE = "CE0",
    parameter RST = "RST0"
) (
    input [3:0] clk, ce, rst,
    input [WIDTH-1:0] d,
    output [WIDTH-1:0] q
);
    localparam integer CLK_INDEX = CLK == "CLK0" ? 0 : CLK == "CLK1" ? 1 : CLK == "CLK2" ? 2 : CLK == "CLK3" ? 3 : -1;
    localparam integer CE_INDEX = CE == "CE0" ? 0 : CE == "CE1" ? 1 : CE == "CE2" ? 2 : CE == "CE3" ? 3 : -1;
    localparam integer RST_INDEX = RST == "RST0" ? 0 : RST == "RST1" ? 1 : RST == "RST2" ? 2 : RST == "RST3" ? 3 : -1;
    generate
        if (CLK == "NONE") begin : bypass
            assign q = d;
        end else if (CLK_INDEX < 0 || CE_INDEX < 0 || RST_INDEX < 0) begin : bad
            $error("MULT18X18D model: a register's CLK must be NONE or CLK0..CLK3, its CE CE0..CE3, its RST RST0..RST3");
        end else begin : register
            reg [WIDTH-1:0] r = {WIDTH{1'b0}};
            always @(posedge clk[CLK_INDEX])
                if (rst[RST_INDEX])
                    r <= {WIDTH{1'b0}};
                else if (ce[CE_INDEX])
                    r <= d;
            assign q = r;
        end
    endgenerate
endmodule
